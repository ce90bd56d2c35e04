"""The detectors' health figures, the firing-rate loss, and where boundaries fall against words."""
import numpy as np
import pytest
import torch

from handwriting_hm.hmlstm.core import HMLSTM
from handwriting_hm.hmlstm.detectors import DetectorHealth, rate_penalty, silent_detectors
from lm.segmentation import alignment, boundary_report


def test_health_counts_rates_window_and_operations():
    # one row, 4 steps, 2 detectors (3 layers): z1 fires at steps 0 and 2, z2 at step 2
    boundaries = torch.tensor([[[1.0, 0.0], [0.0, 0.0], [1.0, 1.0], [0.0, 0.0]]])
    preactivations = torch.tensor([[[0.5, -3.0], [-2.0, -0.1], [0.9, 0.2], [-0.2, 5.0]]])
    health = DetectorHealth(3, "keep")
    health.add(boundaries, preactivations, slope=1.0)
    summary = health.summary()
    assert summary["z1_rate"] == 0.5 and summary["z2_rate"] == 0.25
    # layer 1 computes z at every step: |s| < 1 at steps 0, 2, 3
    assert summary["z1_window"] == pytest.approx(3 / 4)
    # layer 2 computes where it does not COPY: steps 0 (z1 fired: UPDATE), 2 (UPDATE) and 3 (FLUSH after its own
    # z2 at step 2), not step 1 (COPY); of those, |s| < 1 at step 2 only
    assert summary["z2_window"] == pytest.approx(1 / 3)
    assert summary["layer2_copy"] == 0.25 and summary["layer2_flush"] == 0.25
    assert summary["layer1_update"] + summary["layer1_flush"] == 1.0 and summary["layer1_copy"] == 0.0
    assert summary["layer3_update"] == 0.25 and summary["layer3_copy"] == 0.75  # layer 3 reads z2 at step 2 only
    with_slope = DetectorHealth(3, "keep")
    with_slope.add(boundaries, preactivations, slope=4.0)  # the window narrows with the slope: |4 s| < 1
    assert with_slope.summary()["z1_window"] == pytest.approx(1 / 4)
    no_window = DetectorHealth(3)
    no_window.add(boundaries, None, slope=1.0)
    assert "z1_window" not in no_window.summary()


def test_rate_penalty_pulls_towards_the_targets_even_outside_the_window():
    s = torch.full((2, 50, 2), -6.0, requires_grad=True)  # far outside the window: the hard sigmoid passes nothing
    boundaries = torch.zeros(2, 50, 2)
    penalty = rate_penalty(s, boundaries, 1.0, (0.2, 0.05), z_on_copy="recompute")
    penalty.backward()
    p = float(torch.sigmoid(torch.tensor(-12.0)))
    assert float(penalty.detach()) == pytest.approx((p - 0.2) ** 2 + (p - 0.05) ** 2, rel=1e-5)
    assert bool((s.grad < 0).all())  # descending raises s: the rates rise towards their targets
    at_target = torch.zeros(1, 10, 1, requires_grad=True)  # sigmoid(0) = 0.5
    assert float(rate_penalty(at_target, torch.zeros(1, 10, 1), 1.0, (0.5,), "recompute").detach()) == 0.0
    with pytest.raises(ValueError, match="target rates for"):
        rate_penalty(s, boundaries, 1.0, (0.2,))


def test_rate_penalty_with_z_kept_counts_only_steps_that_compute_z():
    # layer 2 COPYs at every step (z1 never fires, no z2 before): with z kept its rate is 0 whatever s says
    s = torch.full((1, 6, 2), 8.0)
    boundaries = torch.zeros(1, 6, 2)
    kept = rate_penalty(s, boundaries, 1.0, (0.0, 0.0), z_on_copy="keep")
    recomputed = rate_penalty(s, boundaries, 1.0, (0.0, 0.0), z_on_copy="recompute")
    p = float(torch.sigmoid(torch.tensor(16.0)))
    assert float(kept) == pytest.approx(p ** 2)  # z1 computes at every step, z2 at none
    assert float(recomputed) == pytest.approx(2 * p ** 2)


def test_silent_detectors_need_two_validations_without_a_firing():
    records = [{"z1_rate": 0.2, "z2_rate": 0.0}, {"z1_rate": 0.0, "z2_rate": 0.0}]
    assert silent_detectors(records) == [2]
    assert silent_detectors(records[:1]) == []
    assert silent_detectors(records + [{"z1_rate": 0.0, "z2_rate": 0.1}]) == [1]


def test_alignment_of_a_detector_that_fires_at_every_space():
    #         t h e _ c a t _ s a t
    spaces = np.array([0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0], dtype=bool)
    figures = alignment(spaces.copy(), spaces)
    assert figures["precision"] == 1.0 and figures["recall"] == 1.0 and figures["f1"] == 1.0
    assert figures["chance_precision"] == pytest.approx(4 / 11)  # steps at a space or just before one
    assert figures["lift"] == pytest.approx(11 / 4)
    before = np.roll(spaces, -1)  # fires on the last letter of each word: still at a word boundary, still recalled
    assert alignment(before, spaces)["precision"] == 1.0 and alignment(before, spaces)["recall"] == 1.0
    inside = np.zeros_like(spaces)
    inside[[1, 5]] = True  # inside words only
    assert alignment(inside, spaces)["precision"] == 0.0 and alignment(inside, spaces)["recall"] == 0.0


def test_shift_null_sees_through_a_rhythm():
    """A detector firing every 4th step, whatever it reads, on text whose words are 3 letters + a space, is
    precise by rhythm: the shifted firings are as precise on average as chance, not as the real ones."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 8, size=400)
    spaces = np.concatenate([np.r_[np.zeros(n, dtype=bool), True] for n in lengths])
    figures = alignment(spaces.copy(), spaces)
    assert figures["shift_lift"] > 1.5 and figures["lift"] > 1.5
    periodic = np.zeros(spaces.size, dtype=bool)
    periodic[::4] = True
    figures = alignment(periodic, spaces)
    assert 0.7 < figures["lift"] < 1.3 and 0.7 < figures["shift_lift"] < 1.3


def test_boundary_report_reads_separators_from_the_vocabulary():
    vocab = ["a", "b", "_", "\n"]
    ids = np.array([0, 1, 2, 0, 3, 1])
    boundaries = np.array([[0, 0], [0, 0], [1, 0], [0, 0], [1, 1], [0, 0]], dtype=float)
    report = boundary_report(boundaries, ids, vocab)
    assert report["z1"]["precision"] == 1.0 and report["z1"]["recall"] == 1.0
    assert report["z2"]["recall"] == 0.5


def test_language_model_recomputes_preactivations_for_a_fast_path():
    from lm.model import LanguageModel, LMConfig
    torch.manual_seed(0)
    model = LanguageModel(LMConfig(vocab_size=7, input_embedding=5, hidden_sizes=(6, 6, 6), embedding_size=6),
                          impl="sparse")
    ids = torch.randint(0, 7, (3, 8))
    assert model(ids).core.preactivations is None
    fast = model(ids, preactivations=True).core
    reference = model(ids, impl="reference").core
    assert isinstance(model.core, HMLSTM)
    torch.testing.assert_close(fast.preactivations[..., 0], reference.preactivations[..., 0], rtol=1e-5, atol=1e-5)


def test_event_alignment_within_a_window_of_points():
    """Pen-ups as events, +-2 points: a firing 2 points from a pen-up hits, 3 points away misses."""
    from handwriting_hm.hmlstm.detectors import event_alignment
    events = np.zeros(100, dtype=bool)
    events[[20, 50, 80]] = True
    fired = np.zeros(100, dtype=bool)
    fired[[18, 53, 81, 5]] = True
    figures = event_alignment(fired, events, before=2, after=2)
    assert figures["precision"] == 0.5  # 18 (2 before 20) and 81 hit; 53 (3 after 50) and 5 miss
    assert figures["recall"] == pytest.approx(2 / 3)  # 20 and 80 found, 50 not
    assert figures["chance_precision"] == pytest.approx(15 / 100)  # 5 steps around each of 3 events
    assert figures["lift"] == pytest.approx(0.5 / 0.15)
    assert event_alignment(fired, events)["precision"] == 0.0  # no window: exact steps only
    with pytest.raises(ValueError, match="equal 1-d"):
        event_alignment(fired[:5], events)
