"""Closed-form results: exact solutions used by tests, models and monitors."""

from lit_repr.theory.lazy_rich import (
    conserved_quantity,
    lazy_rich_init,
    neuron_conserved_quantities,
    single_neuron_solution,
)

__all__ = ["conserved_quantity", "single_neuron_solution", "lazy_rich_init", "neuron_conserved_quantities"]
