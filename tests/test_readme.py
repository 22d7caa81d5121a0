"""The README, read as a stranger would: its commands, tags, paths and messages match what runs produce."""

import re
import sys
from pathlib import Path

import pytest

from lit_repr.cli import LitReprCLI


@pytest.fixture(autouse=True)
def _command_line_of_its_own(monkeypatch):
    """The CLI sees only the arguments a test gives it (not pytest's), as on a real command line."""
    monkeypatch.setattr(sys, "argv", ["lit_repr"])


REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
QUICKSTART = (REPO / "configs" / "quickstart.yaml").read_text()
TAG = re.compile(r"`((?:probe|ident|similarity|train|val|test)/[^`\s]*|<callback>/[^`\s]*)`")


def _code_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


PLUGINS = sorted(p.parent.relative_to(REPO).as_posix() for p in REPO.glob("plugins/*/pyproject.toml"))


def test_the_two_setup_commands_are_what_ci_runs():
    assert PLUGINS, "plugins/ holds no package"
    editable = " ".join(f"-e {p}" for p in PLUGINS)  # every plugin, installed beside lit_repr
    bash = _code_blocks("bash")
    quickstart = f"pip install -e . {editable} && python -m lit_repr fit --config configs/quickstart.yaml"
    assert any(b.strip().endswith(quickstart) for b in bash), quickstart
    install = f'pip install -e ".[dev]" {editable}'
    assert any(b.strip().endswith(f"{install} && python -m pytest") for b in bash), install
    ci = (REPO / ".ci" / "run").read_text()
    assert [line for line in ci.splitlines() if line.startswith("pip install")] == [install]
    assert "\npython -m pytest\n" in ci
    assert "--index-url https://download.pytorch.org/whl/cpu" in README  # CPU-only users
    assert f"pip install -e . {editable}\n" in README


def test_the_test_command_collects_every_plugins_tests():
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r'(?m)^testpaths = \["tests", "plugins"\]$', pyproject)
    for plugin in PLUGINS:
        assert list((REPO / plugin / "tests").glob("test_*.py")), plugin
    core = {p.name for p in (REPO / "tests").rglob("test_*.py")}
    for plugin in PLUGINS:  # a plugin's test modules have names of their own (clear reports, any import mode)
        assert not core & {p.name for p in (REPO / plugin).rglob("test_*.py")}, plugin


def test_every_tag_has_the_documented_shape():
    tags = TAG.findall(README)
    assert len(tags) > 10
    for tag in tags:
        parts = tag.split("/")
        if tag.startswith(("train/", "val/", "test/")):
            assert len(parts) == 2, tag  # the model's own metrics
        elif tag.endswith("/alpha"):
            assert len(parts) == 4, tag  # a probe's penalty: <callback>/<site>/<target>/alpha
        else:
            assert len(parts) == 5, tag  # <callback>/<site>/<target>/<split>/<quantity or figure>


def test_quickstart_tags_and_paths_match_a_run(quickstart_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    proc, run = quickstart_run
    events = EventAccumulator(str(run))
    events.Reload()
    logged = set(events.Tags()["scalars"])
    concrete = {t for t in TAG.findall(README) if "<" not in t and not t.startswith(("ident/", "similarity/"))}
    assert {"probe/backbone.1/digit/val/acc", "val/acc", "train/loss"} <= concrete
    assert concrete <= logged, concrete - logged
    assert "runs/<config name>/version_N/" in README and "`runs/quickstart/version_0/`" in README
    for name in ("config.yaml", "hparams.yaml", "checkpoints", "summary.json"):
        assert f"`{name}" in README and (run / name).exists(), name
    assert list(run.glob("events.out.tfevents.*"))


def test_quickstart_output_sample_matches_a_run(quickstart_run):
    proc, _ = quickstart_run
    sample = next(b for b in _code_blocks("text") if b.startswith("Final readouts (fit"))

    def shape(text):
        return [re.sub(r"\d+\.\d+", "N", line) for line in text.strip().splitlines()]

    printed = proc.stdout.strip().splitlines()
    start = next(i for i, line in enumerate(printed) if line.startswith("Final readouts"))
    assert shape("\n".join(printed[start:])) == shape(sample)


MISTAKES = {
    "class": ("class_path: Classifier", "class_path: Clasifier"),
    "list": ("hidden: [128, 128]", "hidden: 128, 128"),
    "int": ("batch_size: 64", "batch_size: sixty-four"),
    "choice": ("mode: online", "mode: frozn"),
    "argument": ("hidden: [128, 128]", "hiden: [128, 128]"),
    "key": ("max_epochs: 15", "max_epoch: 15"),
}


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_troubleshooting_messages_are_what_the_command_line_prints(mistake, tmp_path, capsys):
    old, new = MISTAKES[mistake]
    cfg = tmp_path / "quickstart.yaml"
    text = QUICKSTART.replace(old, new, 1)
    if mistake == "key":
        text = text.replace("${trainer.max_epochs}", "15")
    cfg.write_text(text)
    with pytest.raises(SystemExit):
        LitReprCLI(args=["fit", "--config", str(cfg)])
    first = next(line for line in capsys.readouterr().err.splitlines() if line.startswith("error:"))
    documented = re.findall(r"(?m)^\s*(error: .*)$", README) + re.findall(r"`(error: [^`]*)`", README)
    assert any(first == d or (d.endswith("...") and first.startswith(d[:-3])) for d in documented), first


def test_troubleshooting_site_message(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "quickstart.yaml"
    cfg.write_text(QUICKSTART.replace('sites: ["backbone.*"]', 'sites: ["backbone.9"]'))
    with pytest.raises(ValueError) as info:
        LitReprCLI(args=["fit", "--config", str(cfg), "--trainer.enable_progress_bar=false"])
    assert f"ValueError: {info.value}" in README
    assert not (tmp_path / "runs").exists()


def test_layout_names_only_what_exists():
    layout = README[README.index("## Layout") :]
    for folder in re.findall(r"^(\w+)/ ", layout, flags=re.M):
        assert (REPO / folder).is_dir(), folder
    for part in ("theory", "federated", "interventions"):
        assert part not in layout or (REPO / "lit_repr" / part).is_dir(), part
