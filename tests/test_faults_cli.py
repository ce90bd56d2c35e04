"""`letters` and `legibility` as a user meets them: the shipped model by default, progress while writing."""
from __future__ import annotations

from handwriting_hm.cli import main
from handwriting_hm.synthesis.model import load_synthesis_model
from handwriting_hm.synthesis.write import write_in_batches
from tests.write_factory import write_tiny_synthesis_checkpoint


def test_letters_defaults_to_the_shipped_synthesis_model(capsys):
    assert main(["letters", "ab"]) == 0
    assert "1 texts written" in capsys.readouterr().out


def test_writing_many_lines_shows_progress(tmp_path, capsys):
    loaded = load_synthesis_model(write_tiny_synthesis_checkpoint(tmp_path / "synthesis.pt", " abcdefghij"))
    written = write_in_batches(["ab"] * 3, loaded, batch_size=2, progress="writing the lines")
    assert len(written) == 3
    assert "writing the lines" in capsys.readouterr().err
    assert [line.offsets.tolist() for line in write_in_batches(["ab"] * 3, loaded, batch_size=2)] == [
        line.offsets.tolist() for line in written]


def test_write_boundaries_says_how_many_markers_it_draws(tmp_path, capsys):
    out = tmp_path / "letters.svg"
    for bias in ("0", "1"):
        assert main(["write", "hello world", "--boundaries", "--out", str(out), "--bias", bias]) == 0
        said = capsys.readouterr().out
        assert "boundaries: z1 fired " in said and " (dots), z2 fired " in said and "(red rings)" in said
        counts = [int(part.split(" fired ")[1].split()[0]) for part in said.split("boundaries: ")[1].split(", ")]
        assert ("a detector that does not fire draws no marker" in said) == (0 in counts)
