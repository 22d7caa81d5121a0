"""FederatedFactory: one-shot federated learning through generative priors exchanged between clients and a server."""
