"""Quiet, informative output (issue 16): one progress report per stage with an ETA, the
libraries' chatter in a log file, DVC plots against the optimizer step with one chart of
every generation, and tables and cards laid out for the terminal they are printed on.
"""

from __future__ import annotations

import io
import json
import logging
import re
import warnings

import pytest
import yaml

from conftest import ROOT


class Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


# ---- progress ----

def test_a_pipe_gets_a_line_per_tenth_with_an_eta(monkeypatch):
    from studbook.core.progress import Progress

    monkeypatch.delenv("STUDBOOK_VERBOSE", raising=False)
    stream = Stream(tty=False)
    with Progress("evaluate m", 1000, "items", stream=stream) as report:
        for done in range(1, 1001):
            report.update(done, "loss 1.0")
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and len(lines) == report.lines == 11  # the first, each tenth
    assert lines[0].startswith("progress: evaluate m 1/1000 items (0%), ") and "ETA" in lines[0]
    assert lines[1].startswith("progress: evaluate m 100/1000 items (10%), ")
    assert lines[-1].startswith("progress: evaluate m 1000/1000 items (100%), ") and "ETA" not in lines[-1]
    assert all(line.endswith("; loss 1.0") for line in lines)


def test_verbose_prints_every_update_and_a_terminal_gets_one_bar(monkeypatch):
    from studbook.core.progress import Progress

    monkeypatch.setenv("STUDBOOK_VERBOSE", "1")
    stream = Stream(tty=False)
    with Progress("x", 30, stream=stream) as report:
        for done in range(1, 31):
            report.update(done)
    assert len(stream.getvalue().splitlines()) == 30
    monkeypatch.delenv("STUDBOOK_VERBOSE")
    monkeypatch.setenv("TQDM_DISABLE", "1")  # what a stage sets for the libraries: not for this bar
    tty = Stream(tty=True)
    with Progress("train step", 500, stream=tty) as report:
        for done in range(1, 501):
            report.update(done, "loss 2.0")
    drawn = tty.getvalue()
    assert drawn.count("\n") <= 1 and "\r" in drawn  # one bar, redrawn in place
    assert "500/500" in drawn and "loss 2.0" in drawn


def test_every_update_is_a_failpoint_printed_or_not(monkeypatch):
    from studbook.core import progress

    seen = []
    monkeypatch.setattr(progress, "reached", lambda kind, subject: seen.append((kind, subject)))
    report = progress.Progress("train step", 40, stream=Stream(tty=False))
    for done in range(1, 41):
        report.update(done, "loss 1.5")
    assert len(seen) == 40 and seen[1] == ("say", "train step 2/40 loss 1.5")
    assert report.lines == 11


def test_only_the_main_process_reports(monkeypatch):
    from studbook.core.progress import Progress

    monkeypatch.setenv("RANK", "1")
    stream = Stream(tty=False)
    report = Progress("x", 10, stream=stream)
    for done in range(1, 11):
        report.update(done)
    assert stream.getvalue() == ""


@pytest.mark.parametrize("seconds, text", [(0.4, "0 s"), (42, "42 s"), (185, "3 min 05 s"), (3725, "1 h 02 min")])
def test_durations_read_at_a_glance(seconds, text):
    from studbook.core.progress import duration

    assert duration(seconds) == text


# ---- the libraries' logs ----

def _chatter() -> None:
    import transformers.utils.logging

    logging.getLogger("lm_eval.api.task").warning("metric acc is defined, but aggregation is not")
    logging.getLogger("lm_eval.evaluator").info("Building contexts")
    transformers.utils.logging.get_logger("transformers.tokenization_utils_base").warning(
        "Token indices sequence length is longer than the specified maximum")
    warnings.warn("a deprecated thing", UserWarning)


def test_library_chatter_goes_to_the_log_file_not_the_terminal(tmp_path, capfd, monkeypatch):
    import transformers.utils.logging

    from studbook.core.quiet import library_output

    monkeypatch.delenv("STUDBOOK_VERBOSE", raising=False)
    log = tmp_path / "logs/evaluate.log"
    level = transformers.utils.logging.get_verbosity()
    with library_output(log) as tally:
        _chatter()
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    text = log.read_text()
    for line in ("WARNING lm_eval.api.task: metric acc is defined, but aggregation is not",
                 "INFO lm_eval.evaluator: Building contexts",
                 "WARNING transformers.tokenization_utils_base: Token indices sequence length",
                 "UserWarning: a deprecated thing"):
        assert line in text, text
    assert tally.warnings == 3
    # everything is put back: lm-eval's warnings reach stderr again outside the block
    assert transformers.utils.logging.get_verbosity() == level
    assert not logging.getLogger("lm_eval").handlers and logging.getLogger("lm_eval").propagate
    logging.getLogger("lm_eval.api.task").warning("after")
    assert "after" not in log.read_text()


def test_verbose_shows_the_chatter_on_the_terminal_too(tmp_path, capfd, monkeypatch):
    from studbook.core.quiet import library_output

    monkeypatch.setenv("STUDBOOK_VERBOSE", "1")
    log = tmp_path / "evaluate.log"
    with library_output(log):
        _chatter()
    err = capfd.readouterr().err
    assert "aggregation is not" in err and "Building contexts" in err
    assert "aggregation is not" in log.read_text() and "Token indices" in log.read_text()


def test_the_log_lives_where_git_and_dvc_outputs_do_not(tmp_path, monkeypatch):
    from studbook.core.quiet import log_file

    monkeypatch.chdir(tmp_path)
    (tmp_path / ".dvc").mkdir()
    assert log_file("pico", "evaluate").as_posix() == ".dvc/tmp/logs/pico/evaluate.log"
    monkeypatch.setenv("RANK", "1")
    assert log_file("pico", "evaluate").name == "evaluate.rank1.log"


# ---- DVC plots ----

def test_the_root_plot_overlays_every_training_generation_against_the_step(tmp_path):
    from conftest import copy_skeleton
    from studbook.repository.proposal import render_root_dvc_yaml

    repo = copy_skeleton(tmp_path / "repo")
    assert "plots:" not in render_root_dvc_yaml(repo)  # nothing trains: no chart
    plots = yaml.safe_load(render_root_dvc_yaml(repo, ["b-lora", "a"]))["plots"]
    assert len(plots) == 1
    (name, plot), = plots[0].items()
    assert name == "training" and plot["x"] == "step" and plot["x_label"] == "optimizer step"
    assert plot["y"] == {"generations/a/live/plots/metrics/train/bits_per_byte.tsv": "bits_per_byte",
                         "generations/b-lora/live/plots/metrics/train/bits_per_byte.tsv": "bits_per_byte"}


def test_the_shipped_root_plot_lists_every_generation_that_trains(monkeypatch):
    from studbook.repository.generation import load_generation

    monkeypatch.chdir(ROOT)
    plot = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"][0]["training"]
    listed = {path.split("/")[1] for path in plot["y"]}
    names = sorted(p.parent.name for p in (ROOT / "generations").glob("*/recipe.yaml"))
    trained = {n for n in names if load_generation(n, check_deps=False).recipe.train.steps}
    assert listed == trained and "founder" in listed and "specialist" not in listed  # a merge logs no curve


def test_dvc_plots_show_offline_from_the_vendored_template():
    """.dvc/config names the template; it loads no script from the network."""
    import configparser

    config = configparser.ConfigParser()
    config.read(ROOT / ".dvc/config")
    template = (ROOT / ".dvc" / config['plots']['html_template']).resolve()
    assert template == ROOT / "src/studbook/templates/dvc_plots.html"
    html = template.read_text(encoding="utf-8")
    assert "{plot_divs}" in html and "{scripts}" not in html  # DVC's CDN tags have nowhere to go
    assert not re.search(r"<script[^>]*\bsrc=", html)
    scripts = re.findall(r"<script>/\* ([\w-]+) ", html)
    assert scripts == ["vega", "vega-lite", "vega-embed"]  # in the order they need each other


# ---- tables and cards ----

def _cli(args: list[str], columns: int = 80):
    from typer.testing import CliRunner

    from studbook import cli

    return CliRunner().invoke(cli.app, args, env={"COLUMNS": str(columns)})


def test_population_fits_80_columns_and_shows_every_benchmark(monkeypatch):
    monkeypatch.chdir(ROOT)
    done = _cli(["population"])
    assert done.exit_code == 0, done.output
    lines = done.output.splitlines()
    assert max(map(len, lines)) <= 80
    founder = json.loads((ROOT / "cards/founder.json").read_text())
    for metric in ("bits_per_byte", "acc"):
        section = done.output.split(f"{metric} per niche", 1)[1].split(" per niche", 1)[0]
        row = next(line for line in section.splitlines() if line.split()[:1] == ["founder"])
        values = [f"{b['value']:.4f}" for b in founder["benchmarks"] if b["metric"] == metric]
        assert row.split()[1:] == values  # one column per niche, in the card's order
    assert "…" not in done.output  # nothing cut off
    wide = _cli(["population"], columns=200)
    assert max(map(len, wide.output.splitlines())) > 120  # the width is the terminal's
    assert len(wide.output.splitlines()) < len(lines)  # the cost joins the members' table


def test_show_renders_the_card_and_sums_up_its_front_matter(monkeypatch):
    monkeypatch.chdir(ROOT)
    raw = (ROOT / "cards/founder.md").read_text()
    shown = _cli(["show", "founder"])
    assert shown.exit_code == 0, shown.output
    assert "model-index:\n" not in shown.output and "  results:" not in shown.output
    assert "front matter of cards/founder.md" in shown.output
    assert "model-index: 1 entry" in shown.output and re.search(r"tags: .*studbook", shown.output)
    lines = shown.output.splitlines()
    title = next(i for i, line in enumerate(lines) if line.strip() == "founder")  # the card's H1
    assert title <= 10 and raw[:raw.index("\n# founder")].count("\n") > 100  # >100 lines of YAML, in a few
    assert "## Results" not in shown.output and "Results" in shown.output  # Markdown rendered
    assert "| stdlib_bpb_general |" not in shown.output
    assert max(map(len, shown.output.splitlines())) <= 80
    assert _cli(["show", "founder", "--raw"]).output == raw


def test_stages_and_commands_document_the_verbosity_knob():
    from studbook.stages import evaluate

    assert "STUDBOOK_VERBOSE" in evaluate.__doc__
    assert "--raw" in _cli(["show", "--help"]).output
