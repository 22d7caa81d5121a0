"""FederatedFactory: clients train one generative prior per (client, class); the server synthesises a
class-balanced data set from those modules alone (Moleri et al., 2026, arXiv 2603.16370)."""
