"""FederatedFactory: federated learning through exchanged generative priors, and its baselines."""
