"""FederatedFactory (Moleri et al., 2026, arXiv 2603.16370): federated learning from generative modules exchanged
once, one per (client, class); the server synthesises a class-balanced set from those modules alone.

Engine-agnostic core: :mod:`~lit_repr.federated.exchange` (safetensors payloads and their verification),
:mod:`~lit_repr.federated.engine` (the client step and the local engine),
:mod:`~lit_repr.federated.server` (synthesis, classifiers, unlearning),
:mod:`~lit_repr.federated.report` (metrics and the run report). Generative priors live in
:mod:`lit_repr.federated.priors`, partitioners in :mod:`lit_repr.federated.partition`.
"""

from lit_repr.federated.engine import ClientTask, LocalEngine, client_step, module_seed
from lit_repr.federated.exchange import ExchangeError, ModulePayload, load_payloads, pack, save_payloads, verify
from lit_repr.federated.server import FederatedServer

__all__ = [
    "ClientTask",
    "ExchangeError",
    "FederatedServer",
    "LocalEngine",
    "ModulePayload",
    "client_step",
    "load_payloads",
    "module_seed",
    "pack",
    "save_payloads",
    "verify",
]
