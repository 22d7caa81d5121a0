"""The Flower ``ServerApp``: one round of FederatedFactory, verified as the local engine verifies.

Steps (:func:`run_federation`):

1. wait for the nodes (``num_clients`` of them, at least ``min_clients``, within ``connect_timeout``);
2. ``query.identify``: each node says which client it is and which classes it holds (within
   ``connect_timeout``: a node's first answer includes starting its ClientApp and loading its data);
3. ``train``: each client gets the core's :class:`~lit_repr.federated.engine.ClientTask` (the same task
   the core's ``LocalEngine`` builds) and replies with its modules;
4. each client's reply goes through the core's
   :meth:`FederatedServer.receive <lit_repr.federated.server.FederatedServer.receive>` on its own: its
   modules are verified (hash, size, safetensors header against the manifest, known kind) and kept all
   together or not at all. A reply that fails is rejected and reported; a module that claims another
   client or a class the client was not asked for is rejected too;
5. failures (a client that raised, did not answer in time, or was rejected) are listed with the classes
   that are therefore missing. Fewer than ``min_clients`` clients or ``min_classes`` classes stops the
   run: ``report.json`` says why and no classifier is trained. Otherwise the server synthesises, trains,
   evaluates (the core's ``FederatedServer.run``) and, if asked (``unlearn``), unlearns exactly;
6. ``run_dir`` receives ``report.json`` (the core's ``write_report``, with the keys of the core's
   ``FederatedFactory`` report plus the Flower-side ``clients``, ``failures`` and ``status``), the
   TensorBoard scalars (the core's ``log_report``), the accepted modules (``modules/``) and the
   classifier's weights (``classifier.safetensors``, ``classifier_after_unlearning.safetensors``).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from lit_repr_flower.federation import FlowerFederation, load_splits, num_classes
from lit_repr_flower.messages import ReplyError, decode_reply, encode_task

__all__ = ["FederationStopped", "FlowerRun", "make_server_app", "run_federation", "app"]

_log = logging.getLogger("lit_repr_flower")


class FederationStopped(RuntimeError):
    """The run stopped before training: too few clients or classes answered with valid modules.

    Args:
        message: why (the report in ``run_dir`` says the same, with the failures).
        report: the report that was written.

    Example:
        >>> FederationStopped("2 of 3 clients answered", {}).report
        {}
    """

    def __init__(self, message: str, report: dict | None = None) -> None:
        super().__init__(message)
        self.report = report or {}


@dataclass
class FlowerRun:
    """What the server kept from a run: the core's server (modules, classifier), the report and its path.

    Attributes:
        server: the core's ``FederatedServer`` (``None`` if the run stopped before receiving).
        report: the ``report.json`` content.
        report_path: where it was written.
        unlearned: the core's ``unlearn`` result when the run unlearned (``{}`` otherwise).
        classifier_state: the server classifier's ``state_dict`` before any unlearning (a copy).
    """

    server: Any = None
    report: dict = field(default_factory=dict)
    report_path: Path | None = None
    unlearned: dict = field(default_factory=dict)
    classifier_state: dict = field(default_factory=dict)


def _wait_for_nodes(grid: Grid, fed: FlowerFederation) -> list[int]:
    target = fed.num_clients if fed.num_clients is not None else fed.min_clients
    deadline = time.monotonic() + fed.connect_timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= target or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if len(nodes) < fed.min_clients:
        raise FederationStopped(
            f"{len(nodes)} node(s) connected within connect_timeout={fed.connect_timeout}s; "
            f"min_clients={fed.min_clients}"
        )
    return nodes


def _reason(reply: Message) -> str:
    """The cause of an error reply in one line: the remote exception's message, without Ray's wrapping."""
    reason = re.sub(r"\x1b\[[0-9;]*m", "", str(reply.error.reason))
    found = re.search(r"ClientAppException occurred\. Message: (.+)", reason)
    if found:
        message = found.group(1).strip()
        return (message[:-2] if message.endswith("'>") else message)[:500]  # the end of Ray's repr wrapper
    lines = [ln.strip() for ln in reason.splitlines() if ln.strip()]
    causes = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception|Interrupt|Exit)\b.*: ", ln)]
    return (causes[-1] if causes else lines[-1] if lines else f"error code {reply.error.code}")[:500]


def _identity(reply: Message, num_classes: int) -> tuple[int, tuple[int, ...]]:
    """``(client, classes)`` from a node's answer to ``query.identify``; :class:`ReplyError` if malformed."""
    record = reply.content.get("identity") if "identity" in reply.content else None
    if not isinstance(record, ConfigRecord):
        raise ReplyError(f"the answer to identify holds no 'identity' record (records: {sorted(reply.content)})")
    client, classes = record.get("client"), record.get("classes")
    if isinstance(client, bool) or not isinstance(client, int) or client < 0:
        raise ReplyError(f"the identity's client must be an int >= 0, got {client!r}")
    if not isinstance(classes, list) or not all(isinstance(k, int) and 0 <= k < num_classes for k in classes):
        raise ReplyError(f"client {client}: classes must be a list of ints in [0, {num_classes}), got {classes!r}")
    return client, tuple(sorted(set(classes)))


def _send(
    grid: Grid, contents: Mapping[int, RecordDict], message_type: str, timeout: float | None
) -> dict[int, Message]:
    messages = [Message(content, dst_node_id=node, message_type=message_type) for node, content in contents.items()]
    replies = grid.send_and_receive(messages, timeout=timeout)
    return {int(r.metadata.src_node_id): r for r in replies}


def _report_stop(fed: FlowerFederation, report: dict, why: str) -> FederationStopped:
    from lit_repr.federated.report import write_report

    report["status"] = "stopped"
    report["stopped_because"] = why
    path = write_report(report, fed.run_dir)
    _log.error("federation stopped: %s (report: %s)", why, path)
    return FederationStopped(why, report)


def run_federation(grid: Grid, fed: FlowerFederation) -> FlowerRun:
    """One FederatedFactory round over a Flower ``Grid``; see the module docstring for the steps.

    Args:
        grid: the ServerApp's grid.
        fed: the run's settings.

    Returns:
        A :class:`FlowerRun`; raises :class:`FederationStopped` (after writing the report) when the
        minimums are not met.
    """
    from lit_repr.federated.engine import ClientTask
    from lit_repr.federated.exchange import ExchangeError, save_payloads
    from lit_repr.federated.report import format_table, write_report
    from lit_repr.federated.server import FederatedServer

    start = time.perf_counter()
    timings: dict[str, float] = {}
    splits = load_splits(fed, ("test",))
    test_x, test_y = splits["test"]
    n_classes = num_classes(fed, test_y)
    server = FederatedServer(
        num_classes=n_classes, classifier=fed.classifier, trainer=fed.classifier_trainer,
        samples_per_class=fed.samples_per_class, seed=fed.seed, batch_size=fed.batch_size, progress=False,
    )
    report: dict[str, Any] = {"engine": "flower", "federation": asdict(fed), "num_classes": n_classes,
                              "prior": {"kind": fed.prior, **fed.prior_config}, "seed": fed.seed}
    failures: dict[str, dict[str, Any]] = {}  # client id (or "node <id>") -> {"reason", "classes"}

    t = time.perf_counter()
    nodes = _wait_for_nodes(grid, fed)
    timings["connect"] = time.perf_counter() - t

    # -- who is who
    t = time.perf_counter()
    identify = _send(grid, {n: RecordDict({"identify": ConfigRecord({})}) for n in nodes}, "query.identify",
                     fed.connect_timeout)
    holds: dict[int, tuple[int, ...]] = {}
    node_of: dict[int, int] = {}
    for node in nodes:
        reply = identify.get(node)
        if reply is None:
            failures[f"node {node}"] = {
                "reason": f"no answer to identify within connect_timeout={fed.connect_timeout}s", "classes": None}
        elif reply.has_error():
            failures[f"node {node}"] = {"reason": _reason(reply), "classes": None}
        else:
            try:
                client, classes = _identity(reply, n_classes)
            except ReplyError as err:
                failures[f"node {node}"] = {"reason": f"rejected: {err}", "classes": None}
                continue
            if client in node_of:
                failures[f"node {node}"] = {"reason": f"claims partition-id {client}, already taken by node "
                                            f"{node_of[client]}", "classes": list(classes)}
                continue
            node_of[client] = node
            holds[client] = classes
    timings["identify"] = time.perf_counter() - t

    # -- one round: tasks down, modules up (a client without data gets no task, as in the local engine)
    t = time.perf_counter()
    tasks = {
        c: ClientTask(client=c, prior=fed.prior, prior_config=fed.prior_config, trainer=fed.prior_trainer,
                      seed=fed.seed, classes=holds[c])
        for c in sorted(holds) if holds[c]
    }
    replies = _send(grid, {node_of[c]: encode_task(task) for c, task in tasks.items()}, "train", fed.reply_timeout)
    timings["client_training"] = time.perf_counter() - t

    t = time.perf_counter()
    accepted, received = [], []
    for c, task in tasks.items():
        reply = replies.get(node_of[c])
        if reply is None:
            failures[str(c)] = {"reason": f"no reply within reply_timeout={fed.reply_timeout}s",
                                "classes": list(task.classes)}
            continue
        if reply.has_error():
            failures[str(c)] = {"reason": _reason(reply), "classes": list(task.classes)}
            continue
        try:
            sender, payloads = decode_reply(reply.content)
            if sender != c:
                raise ReplyError(f"the reply of client {c} says it comes from client {sender}")
            claimed = sorted((p.client, p.cls) for p in payloads)
            wanted = sorted((c, k) for k in task.classes)
            if claimed != wanted:
                raise ReplyError(f"client {c} was asked for modules {wanted} and sent {claimed}")
            server.receive(payloads)  # the core's verification: all of this client's modules or none
        except (ReplyError, ExchangeError) as err:
            failures[str(c)] = {"reason": f"rejected: {err}", "classes": list(task.classes)}
            continue
        accepted.append(c)
        received.extend(payloads)
    timings["exchange"] = time.perf_counter() - t  # decoding and verifying the replies

    missing = server.missing_classes()
    report["clients"] = {str(c): {"node": node_of[c], "classes": list(holds[c]), "accepted": c in accepted}
                         for c in sorted(holds)}
    report["partition"] = {"name": fed.partition, **fed.partition_args,
                           "classes_per_client": {str(c): list(holds[c]) for c in sorted(holds)}}
    if fed.num_clients is not None:
        report["absent_clients"] = [c for c in range(fed.num_clients) if c not in holds]
    report["failures"] = failures
    report["missing_classes"] = missing
    report["timings"] = timings
    for who, failure in failures.items():
        _log.warning("client %s: %s; classes missing because of it: %s", who, failure["reason"], failure["classes"])
    min_classes = n_classes if fed.min_classes is None else fed.min_classes
    covered = n_classes - len(missing)
    if len(accepted) < fed.min_clients:
        raise _report_stop(fed, report, f"{len(accepted)} client(s) sent valid modules; min_clients={fed.min_clients}")
    if covered < min_classes:
        raise _report_stop(
            fed, report, f"{covered} of {n_classes} classes have a valid module (missing: {missing}); "
            f"min_classes={min_classes}")
    if missing:
        _log.warning("continuing without class(es) %s (min_classes=%d): they are not synthesised", missing, min_classes)

    results = server.run(test_x, test_y, modes=("server",))
    for phase in ("synthesis", "classifier", "evaluation"):
        timings[phase] = results["timings"][phase]
    report["status"] = "completed" if not missing else f"completed without class(es) {missing}"
    methods = {"FederatedFactory/server": results["server"]}
    report["methods"] = methods
    report["num_modules"] = len(received)
    report["module_bytes"] = sum(p.manifest["num_bytes"] for p in received)
    if missing:
        report["cannot_synthesise"] = f"class(es) {missing} have no valid module: no synthetic images"

    from safetensors.torch import save_file

    run = FlowerRun(server=server, report=report)
    run.classifier_state = {k: v.detach().clone().contiguous() for k, v in server.models["server"].state_dict().items()}
    run_dir = Path(fed.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_payloads(received, run_dir / "modules")
    save_file(run.classifier_state, str(run_dir / "classifier.safetensors"))
    if fed.unlearn:
        held = [k for k in sorted(server.modules) if all(k[i] == fed.unlearn.get(n, k[i])
                                                          for i, n in enumerate(("client", "cls")))]
        if not held:  # e.g. the client to forget failed: the model never had its modules
            report["unlearning"] = {"request": fed.unlearn, "removed": [],
                                    "note": "no received module matches: the model already has none of them"}
        else:
            t = time.perf_counter()
            out = server.unlearn(**fed.unlearn)
            timings["unlearning"] = time.perf_counter() - t
            run.unlearned = out
            report["unlearning"] = {"request": fed.unlearn,
                                    **{k: out[k] for k in ("removed", "forgotten_classes", "before", "after")}}
            methods["FederatedFactory/server/after_unlearning"] = out["results"]["server"]
            state = {k: v.contiguous() for k, v in server.models["server"].state_dict().items()}
            save_file(state, str(run_dir / "classifier_after_unlearning.safetensors"))
    timings["total"] = time.perf_counter() - start
    run.report_path = write_report(report, run_dir)
    _log_to_tensorboard(run_dir, methods, timings)
    print(format_table(methods, timings))
    print(f"report: {run.report_path}")
    return run


def _log_to_tensorboard(run_dir: Path, methods: Mapping[str, Any], timings: Mapping[str, float]) -> None:
    from lightning.pytorch.loggers import TensorBoardLogger

    from lit_repr.federated.report import log_report

    logger = TensorBoardLogger(save_dir=str(run_dir), name="", version="")
    log_report(logger, methods, timings)
    logger.finalize("success")


def make_server_app(federation: FlowerFederation | None = None, result: FlowerRun | None = None) -> ServerApp:
    """A ``ServerApp`` running :func:`run_federation`.

    Args:
        federation: the run's settings; ``None`` reads them from the run config (``flwr run``).
        result: a :class:`FlowerRun` filled in place with the outcome (for callers in the same process,
            e.g. a simulation started from Python).

    Example:
        >>> type(make_server_app(FlowerFederation(classes=3))).__name__
        'ServerApp'
    """
    if federation is not None and not isinstance(federation, FlowerFederation):
        raise ValueError(f"federation must be a FlowerFederation, got {type(federation).__name__}")
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        fed = federation if federation is not None else FlowerFederation.from_run_config(context.run_config)
        try:
            run = run_federation(grid, fed)
        except FederationStopped as stop:
            if result is not None:
                result.report = stop.report
            raise
        if result is not None:
            result.server, result.report, result.report_path = run.server, run.report, run.report_path
            result.unlearned, result.classifier_state = run.unlearned, run.classifier_state

    return server


#: The ServerApp ``flwr run`` loads (``[tool.flwr.app.components]``): settings from the run config.
app = make_server_app()
