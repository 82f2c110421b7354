import os
import subprocess
import sys

from PIL import Image

from promptinit.cli import main
from promptinit.selfsup.formats import FORMATS


def test_selfsup_command_prints_clusters_and_examples_and_writes_a_png(corpus, clusters, tmp_path):
    png = tmp_path / "plots" / "clusters.png"
    cfg = corpus.config
    # same corpus settings and cache as the fixtures: the command reuses their embeddings
    cmd = [sys.executable, "-m", "promptinit", "selfsup", "--corpus", *cfg.sources,
           "--max-sentences", str(cfg.max_sentences), "--max-doc-sentences", str(cfg.max_doc_sentences),
           "--k", str(clusters.k), "--examples", "1", "--plot", str(png), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ), timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"corpus {corpus.fingerprint}: {len(corpus)} sentences" in out
    assert f"clusters {clusters.key}: k={clusters.k}" in out and "cluster sizes:" in out
    for fmt in FORMATS:
        assert f"=== {fmt} (cluster" in out
    assert "markers <c0>..<c3> = clusters" in out
    with Image.open(png) as img:
        img.verify()
    with Image.open(png) as img:
        assert img.format == "PNG" and min(img.size) > 100


def test_selfsup_command_reports_bad_settings_in_one_line(capsys):
    assert main(["selfsup", "--k", "1", "--corpus", "bbc"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("promptinit selfsup: error: option '--k': 1") and err.count("\n") == 1
    assert main(["selfsup", "--formats", "nsp", "cloze"]) == 2
    assert "cloze" in capsys.readouterr().err
