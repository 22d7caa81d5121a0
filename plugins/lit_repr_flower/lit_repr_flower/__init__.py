"""lit_repr plugin: FederatedFactory on Flower, the distributed engine of :mod:`lit_repr.federated`.

A Flower ``ServerApp``/``ClientApp`` pair on the Message API drives the core's code unchanged: the
client step (:func:`~lit_repr.federated.engine.client_step`), the exchange format (safetensors bytes and
a manifest, :mod:`lit_repr.federated.exchange`) and the server step
(:class:`~lit_repr.federated.server.FederatedServer`). Run it in Flower's simulation engine
(:func:`simulate`, or ``flwr run``) or across machines (SuperLink and SuperNodes); see the README.
"""

from lit_repr_flower.client_app import make_client_app, node_partition
from lit_repr_flower.faults import FailingClient, SlowClient, TamperedReply
from lit_repr_flower.federation import FlowerFederation, client_shard, load_splits
from lit_repr_flower.messages import ReplyError, decode_reply, decode_task, encode_reply, encode_task
from lit_repr_flower.server_app import FederationStopped, FlowerRun, make_server_app, run_federation
from lit_repr_flower.simulation import simulate

__all__ = [
    "FlowerFederation",
    "FlowerRun",
    "FederationStopped",
    "ReplyError",
    "FailingClient",
    "SlowClient",
    "TamperedReply",
    "make_client_app",
    "make_server_app",
    "run_federation",
    "simulate",
    "client_shard",
    "load_splits",
    "node_partition",
    "encode_task",
    "decode_task",
    "encode_reply",
    "decode_reply",
]
