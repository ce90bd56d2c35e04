"""The synthesis model: its window, how the window meets the boundaries, the alphabet, the stop rule."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from tests.factories import make_prepared, write_tiny_checkpoint

from handwriting_hm.synthesis.alphabet import Alphabet, UnknownCharacters
from handwriting_hm.hmlstm.checkpoint import checkpoint_payload, load_checkpoint, save_checkpoint
from handwriting_hm.hmlstm.trainer import TrainConfig
from handwriting_hm.letter_boundaries import character_ends, word_boundary_hits, word_ends
from handwriting_hm.mixture import mixture_log_likelihood
from handwriting_hm.unconditional.model import shift_inputs
from handwriting_hm.synthesis.model import KIND, SynthesisConfig, SynthesisModel, SynthesisState
from handwriting_hm.synthesis import generate as synthesis_generate
from handwriting_hm.synthesis.generate import write_texts
from handwriting_hm.synthesis.evaluate import evaluate_synthesis
from handwriting_hm.synthesis.task import SynthesisPreset, SynthesisTask, train_synthesis
from handwriting_hm.synthesis.toy_font import (ToyFont, ToyFontConfig, ToyTrainingConfig, character_accuracy, evaluate_toy,
                                     train_toy_model)
from handwriting_hm.synthesis.styles import style_from_file, style_from_line, style_from_strokes
from handwriting_hm.synthesis.write import write

ALPHABET = "abcdefghij"


def tiny(**changes) -> SynthesisModel:
    torch.manual_seed(0)
    settings = dict(alphabet=ALPHABET, hidden_sizes=(12, 10, 8), embedding_size=12, n_mixtures=3, n_window=4,
                    initial_window_step=0.2)
    return SynthesisModel(SynthesisConfig(**{**settings, **changes}))


def random_points(batch: int, steps: int) -> torch.Tensor:
    points = torch.randn(batch, steps, 3)
    points[..., 2] = (torch.rand(batch, steps) < 0.2).float()
    return points


def fix_window_step(model: SynthesisModel, characters_per_point: float) -> None:
    """Make exp(kappa_hat) a constant: the window moves by exactly this much at every point."""
    K = model.config.n_window
    with torch.no_grad():
        model.window.weight[2 * K:].zero_()
        model.window.bias[2 * K:].fill_(math.log(characters_per_point))


def test_window_shapes_and_kappa_only_grows():
    model = tiny()
    text, lengths = model.alphabet.one_hot(["abc", "hijabj"])
    output = model(random_points(2, 9), text)
    assert output.windows.vector.shape == (2, 9, len(ALPHABET))
    assert output.windows.kappa.shape == (2, 9, 4)
    assert output.windows.log_phi.shape == (2, 9, 7)  # positions 0..U_max, the last one after the text
    assert bool((output.windows.kappa.diff(dim=1) > 0).all()) and bool((output.windows.kappa[:, 0] > 0).all())
    # w_t = sum_u phi(t, u) c_u: only the text's own characters, weighted by phi
    phi = output.windows.log_phi[..., :-1].exp()
    assert torch.allclose(output.windows.vector, torch.einsum("btu,buv->btv", phi, text), atol=1e-6)
    assert bool((output.windows.vector[0, :, [ALPHABET.index(c) for c in "defghij"]] == 0).all())


def test_gradient_reaches_the_window_and_the_text_matters():
    model = tiny()
    points = random_points(2, 8)
    text, _ = model.alphabet.one_hot(["abc", "jih"])
    log_likelihood, _ = model.sequence_log_likelihood(points, text)
    (-log_likelihood.sum()).backward()
    for name in ("window.weight", "window.bias", "window_in.0.weight", "window_in.1.weight", "core.bottom_up.0.weight"):
        gradient = dict(model.named_parameters())[name].grad
        assert gradient is not None and gradient.abs().sum() > 0, name
    other, _ = model.alphabet.one_hot(["ggg", "ddd"])
    assert not torch.allclose(log_likelihood, model.sequence_log_likelihood(points, other)[0])


def test_a_layer_that_copies_does_not_see_the_window_but_the_output_does():
    model = tiny(hidden_sizes=(12, 10), layer_norm=False)
    with torch.no_grad():  # layer 1's boundary never fires: layer 2 (the top) COPYs after its first step
        model.core.recurrent[0].bias[-1] = -1e4
    points = random_points(1, 6)
    first, second = (model(points, model.alphabet.one_hot([text])[0]) for text in ("abc", "hij"))
    assert bool((first.boundaries == 0).all())
    assert torch.equal(first.hidden[1], second.hidden[1])  # layer 2: the same whatever the text
    assert not torch.allclose(first.params.mu, second.params.mu)  # the output module reads w_t at every step


def test_padded_steps_and_characters_change_nothing():
    model = tiny()
    points = random_points(2, 7)
    text, _ = model.alphabet.one_hot(["ab", "hijab"])
    together, _ = model.sequence_log_likelihood(points, text, lengths=torch.tensor([4, 7]))
    alone = model.sequence_log_likelihood(points[:1, :4], model.alphabet.one_hot(["ab"])[0])[0]
    assert torch.allclose(together[0], alone[0], atol=1e-5)


@pytest.mark.slow  # torch.compile
def test_the_compiled_step_gives_the_plain_loops_likelihoods_and_gradients():
    """impl="compiled" (train --impl auto) is the same model: one compile serves texts of any length."""
    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("no C++ compiler here: torch.compile cannot compile for the CPU (the fallback is tested below)")
    plain, compiled = tiny(), tiny()
    compiled.impl = "compiled"
    points = random_points(3, 9)
    for texts in (["ab", "hijab", "cc"], ["abcdefg", "j", "hh"]):
        text, _ = plain.alphabet.one_hot(texts)
        results = []
        for model in (plain, compiled):
            model.zero_grad()
            total, _ = model.sequence_log_likelihood(points, text, lengths=torch.tensor([9, 5, 7]))
            total.sum().backward()
            results.append((total.detach(), [p.grad.clone() for p in model.parameters()]))
        assert torch.allclose(results[0][0], results[1][0], atol=1e-5)
        for a, b in zip(results[0][1], results[1][1]):
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    assert compiled.impl == "compiled" and compiled._compiled_step is not None  # it really ran compiled


@pytest.mark.parametrize("layer_norm", [True, False])
def test_the_sparse_step_gives_the_reference_results_and_gradients(layer_norm):
    """impl="sparse" skips the rows that COPY: the same likelihoods, boundaries, final state and
    gradients (of the weights and of a carried state), in float64, with padding."""
    torch.set_default_dtype(torch.float64)
    try:
        models = {impl: tiny(layer_norm=layer_norm, hidden_sizes=(12, 10, 8, 6)) for impl in ("reference", "sparse")}
        models["sparse"].impl = "sparse"
        torch.manual_seed(3)
        points = random_points(4, 30)
        text, _ = models["reference"].alphabet.one_hot(["abc", "hij", "a", "jihgf"])
        lengths = torch.tensor([30, 17, 25, 9])
        carried = models["reference"].initial_state(4)
        carried = SynthesisState.from_tensors([torch.randn_like(t) for t in carried.tensors()[:-3]]
                                              + [torch.randint(0, 2, carried.core.z.shape).double(),
                                                 carried.kappa.abs(), torch.rand_like(carried.window)])
        results = {}
        for impl, model in models.items():
            state = SynthesisState.from_tensors([t.clone().requires_grad_() for t in carried.tensors()])
            output = model(shift_inputs(points), text, state=state, lengths=lengths)
            total = (mixture_log_likelihood(output.params, points) * (torch.arange(30)[None] < lengths[:, None])).sum()
            total = total + sum(t.sum() for t in output.state.tensors())  # the final state is an output too
            total.backward()
            results[impl] = (total.detach(), output.boundaries, [t.detach() for t in output.state.tensors()],
                             [p.grad for p in model.parameters()], [t.grad for t in state.core.h + state.core.c])
    finally:
        torch.set_default_dtype(torch.float32)
    reference, sparse = results["reference"], results["sparse"]
    fired = reference[1][torch.arange(30)[None] < lengths[:, None]]
    assert all(0 < rate < 1 for rate in fired.mean(dim=0).tolist())  # every detector both fires and not: rows COPY
    assert torch.equal(reference[1], sparse[1])
    assert torch.allclose(reference[0], sparse[0], rtol=1e-12)
    for a, b in zip(reference[2] + reference[3] + reference[4], sparse[2] + sparse[3] + sparse[4]):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


def test_auto_runs_the_sparse_step_until_layer_1_fires_often(monkeypatch):
    compiled_calls = []

    def compile_counting(function):  # stands in for torch.compile: counts the steps that ran "compiled"
        def call(*args):
            compiled_calls.append(1)
            return function(*args)
        return call

    monkeypatch.setattr(torch, "compile", compile_counting)
    model = tiny()
    model.impl = "auto"
    points = random_points(2, 6)
    text, _ = model.alphabet.one_hot(["ab", "cd"])
    with torch.no_grad():
        model.core.norms[0].bias[-1] = -50.0  # z^1 never fires
    model.sequence_log_likelihood(points, text)
    model.sequence_log_likelihood(points, text)
    assert not compiled_calls  # silent detectors: the sparse step, every time
    with torch.no_grad():
        model.core.norms[0].bias[-1] = 50.0  # z^1 fires at every point
    model.sequence_log_likelihood(points, text)  # decided on the last call's rate: still sparse
    assert not compiled_calls
    model.sequence_log_likelihood(points, text)
    assert len(compiled_calls) == 6  # one compiled step per point


def test_the_mixed_copy_gradient_reaches_the_detectors_through_copy_rows_and_never_runs_sparse():
    """copy_gradient="mixed" (hmlstm/core.py): a detector that chose COPY still learns from it. The
    sparse step skips COPY rows, so it is refused, and auto takes the compiled step."""
    points = random_points(2, 6)
    gradients = {}
    for copy_gradient in ("straight", "mixed"):
        model = tiny(copy_gradient=copy_gradient)
        text, _ = model.alphabet.one_hot(["ab", "cd"])
        log_likelihood, output = model.sequence_log_likelihood(points, text)
        (-log_likelihood.sum()).backward()
        gradients[copy_gradient] = model.core.recurrent[0].weight.grad[4 * 12:].clone()  # layer 1's detector row
        assert (output.boundaries[..., 0] == 0).any()  # some COPY rows in layer 2
    assert not torch.equal(gradients["straight"], gradients["mixed"])
    with pytest.raises(ValueError, match="copy_gradient='straight'"):
        SynthesisModel(tiny(copy_gradient="mixed").config, impl="sparse")
    assert tiny(copy_gradient="mixed")._auto_impl(torch.device("cpu")) == "compiled"
    with pytest.raises(ValueError, match="unknown copy_gradient"):
        tiny(copy_gradient="both")


def test_a_step_that_cannot_compile_runs_plain_and_says_so_once(monkeypatch, capsys):
    def broken(function):
        def call(*args):
            raise RuntimeError("no C++ compiler\nsecond line")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    model, plain = tiny(), tiny()
    model.impl = "compiled"
    points = random_points(2, 5)
    text, _ = model.alphabet.one_hot(["ab", "cd"])
    first = model.sequence_log_likelihood(points, text)[0]
    assert torch.equal(first, plain.sequence_log_likelihood(points, text)[0])
    model.sequence_log_likelihood(points, text)
    errors = capsys.readouterr().err.splitlines()
    assert errors == ["handwriting-hm: torch.compile failed (no C++ compiler); the synthesis step runs uncompiled"]


def test_unknown_characters_are_named_in_one_line():
    alphabet = Alphabet.from_texts(["a bad cab", "dig"])
    assert alphabet.characters == " abcdgi"
    with pytest.raises(UnknownCharacters) as error:
        alphabet.encode("a big QUIZ?")
    message = str(error.value)
    assert isinstance(error.value, ValueError) and "\n" not in message
    for character in "?IQUZ":
        assert repr(character) in message
    assert "'a'" not in message.split(":")[0]
    with pytest.raises(UnknownCharacters, match="empty"):
        alphabet.encode("")
    with pytest.raises(UnknownCharacters, match="'z'"):
        write_texts(tiny(), ["abz"])


def test_writing_stops_at_once_when_the_window_is_already_past_the_text():
    model = tiny()
    fix_window_step(model, 1000.0)
    written = write_texts(model, ["abc", "hijabj"])
    assert written.lengths.tolist() == [0, 0] and written.finished.all()
    assert written.offsets.shape == (2, 0, 3)


def test_writing_stops_at_the_first_pen_up_after_the_window_passes_the_last_character():
    model = tiny()
    fix_window_step(model, 0.25)  # four points per character
    written = write_texts(model, ["abc", "hijabj"], max_points_per_character=40,
                          generator=torch.Generator().manual_seed(0))
    assert written.finished.all()
    for row, characters in enumerate((3, 6)):
        length = int(written.lengths[row])
        assert 3 * characters <= length <= 6 * characters  # about 4 per character and a pen-up, far below the cap
        assert bool((written.offsets[row, length:] == 0).all())  # nothing written after the stop
        log_phi = written.log_phi[row, :length, :characters + 1]
        past = log_phi[:, characters] > log_phi[:, :characters].max(dim=-1).values
        stop = past & (written.offsets[row, :length, 2] > 0.5)
        assert stop[-1] and not stop[:-1].any()  # the rule held at the last point, and never before


def test_a_pen_that_never_lifts_stops_at_the_cap():
    model = tiny()
    fix_window_step(model, 0.25)
    with torch.no_grad():
        model.head.linear.bias[-1] = -1e4  # end_of_stroke never drawn
    written = write_texts(model, ["abc"], max_points_per_character=8)
    assert written.lengths.tolist() == [24] and not written.finished.any()


def test_a_window_that_never_moves_stops_at_the_cap():
    model = tiny()
    fix_window_step(model, 1e-12)
    written = write_texts(model, ["ab", "hijab"], max_points_per_character=5)
    assert written.lengths.tolist() == [10, 25] and not written.finished.any()
    with pytest.raises(ValueError, match="bias"):
        write_texts(model, ["ab"], bias=-1.0)


def test_write_returns_the_ink_in_raw_units_with_what_each_point_attends_to(tmp_path):
    model = tiny()
    fix_window_step(model, 0.25)
    stats = {"mean": [3.0, -1.0], "std": [10.0, 20.0]}
    path = tmp_path / "synthesis.pt"
    save_checkpoint(path, checkpoint_payload(KIND, model.config.to_dict(), model.state_dict(), 1.0, {"stats": stats}))
    written = write("hij", path, bias=1.0, seed=3)
    again = write("hij", path, bias=1.0, seed=3)
    assert written.finished and np.array_equal(written.offsets, again.offsets)
    normalised = write_texts(model, ["hij"], bias=1.0, generator=torch.Generator().manual_seed(3))
    length = int(normalised.lengths[0])
    assert len(written.offsets) == length == len(written.attended) == len(written.boundaries)
    assert np.allclose(written.offsets[:, 0], normalised.offsets[0, :length, 0].numpy() * 10.0 + 3.0, atol=1e-5)
    assert written.attended[0] == 0 and written.attended[-1] == 2 and bool((np.diff(written.attended) >= 0).all())
    assert sum(len(stroke) for stroke in written.strokes) == length
    with pytest.raises(UnknownCharacters, match="'Q'"):
        write("hiQ", path)
    with pytest.raises(ValueError, match="expected a 'synthesis' model"):
        write("hij", write_tiny_checkpoint(tmp_path / "unconditional.pt"))

    # a style in raw units is normalised with the checkpoint's stats before it primes the model
    style = np.array([[13.0, 19.0, 0.0], [-7.0, -1.0, 1.0], [3.0, 39.0, 1.0]], dtype=np.float32)
    styled = write("hij", path, style=(style, "ab"), bias=50.0, temperature=1e-4)
    primer = torch.tensor([[1.0, 1.0, 0.0], [-1.0, 0.0, 1.0], [0.0, 2.0, 1.0]])
    expected = write_texts(model, ["hij"], primers=[(primer, "ab")], bias=50.0, temperature=1e-4)
    assert np.allclose(styled.offsets[:, 0], expected.offsets[0, :, 0].numpy() * 10.0 + 3.0, atol=1e-3)
    assert not np.allclose(styled.offsets[:3], written.offsets[:3])


def test_a_style_comes_from_a_line_of_the_prepared_file(tmp_path):
    data = make_prepared(tmp_path, n_forms=1)
    offsets, text = style_from_line(data, "a00-000u-03")
    assert text == "line 3" and offsets.shape[1] == 3 and 20 <= len(offsets) < 60
    with pytest.raises(ValueError, match="no line 'a00-000u-99'"):
        style_from_line(data, "a00-000u-99")


def test_a_style_comes_from_drawn_strokes_json_or_inkml(tmp_path):
    offsets, text = style_from_strokes([[[10, 50], [12, 47]], [[20, 50], [21, 52], [25, 52]]], "hi")
    assert text == "hi"
    assert offsets.tolist() == [[0, 0, 0], [2, 3, 1], [8, -3, 0], [1, -2, 0], [4, 0, 1]]  # y up, pen-ups
    (tmp_path / "style.json").write_text(json.dumps({"text": "hi", "strokes": [[[10, 50], [12, 47]],
                                                                              [[20, 50], [21, 52], [25, 52]]]}))
    assert style_from_file(tmp_path / "style.json")[0].tolist() == offsets.tolist()
    (tmp_path / "style.inkml").write_text(
        '<ink xmlns="http://www.w3.org/2003/InkML"><annotation type="transcription">hi</annotation>'
        '<trace>10 50, 12 47</trace><trace>20 50 0.1, 21 52 0.2, 25 52 0.3</trace></ink>')
    inkml_offsets, inkml_text = style_from_file(tmp_path / "style.inkml")
    assert inkml_offsets.tolist() == offsets.tolist() and inkml_text == "hi"
    assert style_from_file(tmp_path / "style.inkml", text="ho")[1] == "ho"
    (tmp_path / "untitled.json").write_text(json.dumps({"strokes": [[[0, 0]]]}))
    with pytest.raises(ValueError, match="does not say its text"):
        style_from_file(tmp_path / "untitled.json")
    with pytest.raises(ValueError, match="non-empty list"):
        style_from_strokes([[]], "hi")


def test_iam_training_keeps_checkpoints_and_resumes_exactly(tmp_path):
    data = make_prepared(tmp_path, n_forms=2)
    model = SynthesisConfig(hidden_sizes=(8, 8), embedding_size=8, n_mixtures=2, n_window=2)

    def preset(steps: int) -> SynthesisPreset:
        return SynthesisPreset(model, batch_size=4, validation_lines=2,
                               train=TrainConfig(lr=1e-2, max_steps=steps, eval_every=2, device="cpu", quiet=True))

    train_synthesis(data, tmp_path / "straight", preset(3))
    train_synthesis(data, tmp_path / "resumed", preset(2))
    summary = train_synthesis(data, tmp_path / "resumed", preset(3), resume=True)
    assert summary["steps"] == 3
    straight, resumed = (load_checkpoint(tmp_path / run / "latest.pt", kind=KIND) for run in ("straight", "resumed"))
    assert straight["config"]["alphabet"] == " 0123456789eiln"  # every character of the transcriptions
    assert set(straight["metadata"]["stats"]) == {"mean", "std"}
    for name, weight in straight["model"].items():
        assert torch.equal(weight, resumed["model"][name]), name
    test = evaluate_synthesis(tmp_path / "straight" / "latest.pt", data, split="test")
    assert test.lines == 1 and math.isfinite(test.log_likelihood_per_sequence)  # 1 of 20 lines: the 5% test split
    assert test.ci95_low == test.ci95_high == test.log_likelihood_per_sequence  # one line: no width
    assert len(test.boundary_rate) == 1 and 0 <= test.boundary_rate[0] <= 1


def chunk_lines(count: int) -> list[tuple[torch.Tensor, str]]:
    """`count` lines of 5 to 24 random points, each with a text of the tiny alphabet."""
    generator = torch.Generator().manual_seed(1)
    lengths = torch.randint(5, 25, (count,), generator=generator).tolist()
    return [(random_points(1, length)[0], ALPHABET[i % 7:i % 7 + 3]) for i, length in enumerate(lengths)]


def test_chunked_lines_carry_the_state_and_add_up_to_whole_lines():
    torch.set_default_dtype(torch.float64)  # the batches are made in the default dtype
    try:
        model = tiny()
        alphabet = Alphabet(ALPHABET)
        lines = [(points.double(), text) for points, text in chunk_lines(6)]
        task = SynthesisTask(alphabet, lines, lines[:1], batch_size=3, chunk_points=4)
        batches = list(task.batches(0))
        with torch.no_grad():
            whole = sum(float(model.sequence_log_likelihood(points[None], alphabet.one_hot([text])[0])[0])
                        for points, text in lines)
            carried, fresh = 0.0, 0.0
            for batch in batches:
                loss, points = task.loss(model, batch)
                carried += -float(loss) * points
                state, task.state = task.state, None  # the same chunk from a zero state, as if nothing were carried
                fresh += -float(task.loss(model, batch)[0]) * points
                task.state = state
    finally:
        torch.set_default_dtype(torch.float32)
    assert sum(batch.previous is None for batch in batches) == 2  # two groups of three lines, each in several chunks
    assert len(batches) > 2 and all(batch.offsets.shape[1] <= 4 for batch in batches)
    assert carried == pytest.approx(whole, rel=1e-10)
    assert abs(fresh - whole) > 1e-3  # so the carried state is what makes the chunks add up


def test_chunked_training_shares_each_group_of_lines_among_processes(monkeypatch):
    lines = chunk_lines(9)
    per_rank = []
    for rank in (0, 1):
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("RANK", str(rank))
        task = SynthesisTask(Alphabet(ALPHABET), lines, lines[:1], batch_size=3, chunk_points=4)
        per_rank.append(list(task.batches(0)))
    first, second = per_rank
    assert len(first) == len(second)  # the same number of steps in every process, or DDP would hang
    assert [batch.previous is None for batch in first] == [batch.previous is None for batch in second]
    assert sum(int(batch.lengths.sum()) for batches in per_rank for batch in batches) == sum(len(p) for p, _ in lines)


def test_chunked_training_resumes_in_the_middle_of_a_line_exactly(tmp_path):
    data = make_prepared(tmp_path, n_forms=2)
    model = SynthesisConfig(hidden_sizes=(8, 8), embedding_size=8, n_mixtures=2, n_window=2)

    def preset(steps: int) -> SynthesisPreset:
        return SynthesisPreset(model, batch_size=4, validation_lines=2, chunk_points=8,
                               train=TrainConfig(lr=1e-2, max_steps=steps, eval_every=100, device="cpu", quiet=True))

    train_synthesis(data, tmp_path / "straight", preset(5))
    train_synthesis(data, tmp_path / "resumed", preset(3))
    stopped = load_checkpoint(tmp_path / "resumed" / "latest.pt", kind=KIND)
    assert stopped["task"]["carried"] is not None  # step 3 ended inside the first lines (20 to 59 points)
    assert stopped["metadata"]["task"]["chunk_points"] == 8
    train_synthesis(data, tmp_path / "resumed", preset(5), resume=True)
    straight, resumed = (load_checkpoint(tmp_path / run / "latest.pt", kind=KIND) for run in ("straight", "resumed"))
    for name, weight in straight["model"].items():
        assert torch.equal(weight, resumed["model"][name]), name


def test_the_toy_font_reader_reads_the_font_and_counts_edits():
    font = ToyFont(ToyFontConfig())
    generator = torch.Generator().manual_seed(1)
    texts = font.random_texts(50, generator)
    assert [font.read(font.write(text, generator)) for text in texts] == texts
    line = font.write("abc", generator)
    assert font.read(torch.cat([line[:3], line[4:]])) != "abc"  # a lost pen-up merges two strokes
    assert character_accuracy(["abd", "x"], ["abc", ""]) == pytest.approx(1 - 2 / 3)


@pytest.fixture(scope="module")
def toy_model(tmp_path_factory):
    """A 2 x 64 model trained on the toy font for 600 steps (about 60 s of one CPU thread)."""
    font = ToyFont(ToyFontConfig())
    model, texts = train_toy_model(font, ToyTrainingConfig(), tmp_path_factory.mktemp("toy"))
    return font, model, texts


@pytest.mark.slow  # trains the toy model (module-scoped, shared with the next test)
def test_a_small_model_trained_on_the_toy_font_writes_held_out_strings_legibly(toy_model):
    font, model, texts = toy_model
    assert len(texts) == 100
    assert evaluate_toy(font, model, texts, ToyTrainingConfig.bias).accuracy >= 0.90  # 94.9% when measured


@pytest.mark.slow
def test_primed_with_a_line_the_toy_model_writes_on_after_it(toy_model):
    font, model, texts = toy_model
    generator = torch.Generator().manual_seed(7)
    primers = font.lines(font.random_texts(len(texts), generator), generator)
    written = write_texts(model, texts, bias=ToyTrainingConfig.bias, primers=primers,
                          generator=torch.Generator().manual_seed(0))
    read = [font.read(offsets[:length]) for offsets, length in zip(written.offsets, written.lengths)]
    assert character_accuracy(read, texts) >= 0.90  # the new text only, not the primer's again


@pytest.mark.parametrize("primed", [False, True])
def test_writing_on_the_copy_skipping_stepper_writes_what_the_plain_step_writes(monkeypatch, primed):
    """write_texts steps on the library's COPY-skipping stepper: the same lengths and boundaries as
    SynthesisModel.step from the same seed, the points to rounding for several texts (few_rows.c's products),
    and bit for bit for one; after primers too, whose boundaries the stepper starts from."""
    model = tiny()
    with torch.no_grad():  # each detector fires at some points only, so rows COPY beside rows that compute
        model.core.norms[0].bias[-1] = 0.0
        model.core.norms[1].bias[-1] = 0.5
    texts = ["abcjd", "hij", "jabgfe"]
    primers = None
    if primed:
        torch.manual_seed(5)
        primers = [(random_points(1, 7)[0], "ab"), (random_points(1, 4)[0], "c"), (random_points(1, 9)[0], "jj")]
    one_hot, _ = model.alphabet.one_hot(texts)
    assert isinstance(synthesis_generate.stepper_for(model, one_hot, model.initial_state(3), 1.0),
                      synthesis_generate.SkippingStepper)

    def written():
        return [write_texts(model, texts[:n], bias=1.0, primers=None if primers is None else primers[:n],
                            generator=torch.Generator().manual_seed(4)) for n in (3, 1)]

    skipping = written()
    monkeypatch.setattr(synthesis_generate, "stepper_for", synthesis_generate.PlainStepper)
    plain = written()
    valid = torch.arange(skipping[0].boundaries.shape[1])[None] < skipping[0].lengths[:, None]
    assert all(0 < rate < 1 for rate in skipping[0].boundaries[valid].mean(dim=0).tolist())
    assert torch.equal(skipping[0].lengths, plain[0].lengths)
    assert torch.equal(skipping[0].boundaries, plain[0].boundaries)
    assert torch.allclose(skipping[0].offsets, plain[0].offsets, atol=1e-5)
    assert torch.allclose(skipping[0].log_phi, plain[0].log_phi, atol=1e-4)
    for field in ("lengths", "boundaries", "offsets", "log_phi"):
        assert torch.equal(getattr(skipping[1], field), getattr(plain[1], field)), field


def test_soft_boundaries_write_on_the_plain_step():
    model = tiny(boundary_mode="soft")  # nothing to skip: the COPY-skipping stepper refuses it
    one_hot, _ = model.alphabet.one_hot(["ab"])
    assert isinstance(synthesis_generate.stepper_for(model, one_hot, model.initial_state(1), 1.0),
                      synthesis_generate.PlainStepper)
    assert 1 <= int(write_texts(model, ["ab"], max_points_per_character=3).lengths[0]) <= 6


def test_primers_of_different_lengths_batch_as_they_run_alone():
    model = tiny()
    primers = [(random_points(1, 5)[0], "ab"), (random_points(1, 9)[0], "jjij")]
    together = write_texts(model, ["cd", "e"], primers=primers, max_points_per_character=3, bias=50.0, temperature=1e-4)
    for row, (primer, text) in enumerate(zip(primers, ["cd", "e"])):
        alone = write_texts(model, [text], primers=[primer], max_points_per_character=3, bias=50.0, temperature=1e-4)
        length = int(alone.lengths[0])
        assert int(together.lengths[row]) == length
        # bias 50 and temperature 1e-4 draw the likeliest mean and pen state, whatever the random numbers
        assert torch.allclose(together.offsets[row, :length, :2], alone.offsets[0, :, :2], atol=1e-4)
    unprimed = write_texts(model, ["cd"], max_points_per_character=3, bias=50.0, temperature=1e-4)
    assert not torch.allclose(unprimed.offsets[0, :2, :2], together.offsets[0, :2, :2])  # the primer matters
    with pytest.raises(UnknownCharacters, match="'Q'"):
        write_texts(model, ["cd"], primers=[(primers[0][0], "aQ")])
    with pytest.raises(ValueError, match="no points"):
        write_texts(model, ["cd"], primers=[(torch.zeros(0, 3), "ab")])


def test_firings_are_set_against_the_word_ends_and_the_chance_rate():
    attended = np.array([0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 4])  # "ab cd", one character after another
    assert character_ends(attended).tolist() == [1, 4, 6, 8, 10]
    assert word_ends(attended, "ab cd").tolist() == [4, 10]  # after "b" and after "d"
    fired = np.zeros(11)
    fired[[4, 7, 10]] = 1
    exact = word_boundary_hits([(fired, attended, "ab cd")], tolerance=0)
    assert (exact.firings, exact.hits, exact.near) == (3, 2, 2)
    assert exact.hit_rate == pytest.approx(2 / 3) and exact.chance_rate == pytest.approx(2 / 11)
    near = word_boundary_hits([(fired, attended, "ab cd")] * 2, tolerance=1)
    assert (near.firings, near.hits, near.points, near.near) == (6, 4, 22, 10)
    assert math.isnan(word_boundary_hits([(np.zeros(11), attended, "ab cd")]).hit_rate)
