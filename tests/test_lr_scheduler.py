"""Learning-rate schedulers: lr sequences against hand-computed values and PyTorch, state_dict round trips."""
import math
import warnings

import numpy as np
import pytest

import gradtensor as gt
from gradtensor import optim
from gradtensor.optim import lr_scheduler as sched


def make_optimizer(cls=optim.SGD, lr=0.1, **kwargs):
    return cls([gt.zeros(2, requires_grad=True)], lr=lr, **kwargs)


def lr_sequence(scheduler, steps):
    """The lr of the first group after construction and after each of `steps` steps."""
    lrs = [scheduler.get_last_lr()[0]]
    for _ in range(steps):
        scheduler.optimizer.step()
        scheduler.step()
        lrs.append(scheduler.get_last_lr()[0])
    assert lrs[-1] == scheduler.optimizer.param_groups[0]["lr"]
    return lrs


def test_step_lr():
    lrs = lr_sequence(sched.StepLR(make_optimizer(), step_size=3, gamma=0.5), 7)
    np.testing.assert_allclose(lrs, [0.1] * 3 + [0.05] * 3 + [0.025] * 2, rtol=1e-15)


def test_multistep_lr_counts_repeated_milestones():
    lrs = lr_sequence(sched.MultiStepLR(make_optimizer(), milestones=[5, 2, 5], gamma=0.1), 6)
    np.testing.assert_allclose(lrs, [0.1, 0.1, 0.01, 0.01, 0.01, 1e-4, 1e-4], rtol=1e-14)


def test_exponential_lr():
    lrs = lr_sequence(sched.ExponentialLR(make_optimizer(), gamma=0.5), 4)
    np.testing.assert_allclose(lrs, [0.1, 0.05, 0.025, 0.0125, 0.00625], rtol=1e-15)


def test_cosine_annealing_lr_follows_the_cosine_past_t_max():
    lrs = lr_sequence(sched.CosineAnnealingLR(make_optimizer(), T_max=4, eta_min=0.01), 8)
    expected = [0.01 + 0.09 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(9)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-14)
    assert lrs[4] == pytest.approx(0.01) and lrs[8] == pytest.approx(0.1)


def test_linear_lr_defaults():
    lrs = lr_sequence(sched.LinearLR(make_optimizer(lr=0.3)), 7)
    np.testing.assert_allclose(lrs, [0.1, 0.14, 0.18, 0.22, 0.26, 0.3, 0.3, 0.3], rtol=1e-14)


def test_lambda_lr_per_group():
    a, b = gt.zeros(1, requires_grad=True), gt.zeros(1, requires_grad=True)
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 1.0}], lr=0.1)
    scheduler = sched.LambdaLR(opt, [lambda e: 1 / (e + 1), lambda e: 0.5**e])
    opt.step()
    scheduler.step()
    opt.step()
    scheduler.step()
    np.testing.assert_allclose(scheduler.get_last_lr(), [0.1 / 3, 0.25], rtol=1e-15)
    assert [g["initial_lr"] for g in opt.param_groups] == [0.1, 1.0]


def test_one_cycle_lr_with_momentum():
    opt = make_optimizer(momentum=0.9)
    scheduler = sched.OneCycleLR(opt, max_lr=1.0, total_steps=10)
    lrs, momenta = [scheduler.get_last_lr()[0]], [opt.param_groups[0]["momentum"]]
    for _ in range(9):
        opt.step()
        scheduler.step()
        lrs.append(scheduler.get_last_lr()[0])
        momenta.append(opt.param_groups[0]["momentum"])
    # warm-up over steps 0..2 (pct_start * 10 - 1), cosine from max_lr to initial_lr / 1e4 over steps 2..9
    assert lrs[0] == pytest.approx(1.0 / 25) and momenta[0] == pytest.approx(0.95)
    assert lrs[1] == pytest.approx(0.04 + (1 - 0.04) / 2)
    assert lrs[2] == pytest.approx(1.0) and momenta[2] == pytest.approx(0.85)
    assert lrs[9] == pytest.approx(0.04 / 1e4) and momenta[9] == pytest.approx(0.95)
    cos_pct = (1 + math.cos(math.pi * 3 / 7)) / 2
    assert lrs[5] == pytest.approx(0.04 / 1e4 + (1 - 0.04 / 1e4) * cos_pct)
    assert momenta[5] == pytest.approx(0.95 + (0.85 - 0.95) * cos_pct)
    opt.step()
    scheduler.step()  # step 10 = total_steps is still allowed, as in PyTorch
    with pytest.raises(ValueError, match="total_steps is 10"):
        scheduler.step()


def test_one_cycle_lr_cycles_adam_beta1():
    opt = make_optimizer(optim.Adam, betas=(0.9, 0.99))
    scheduler = sched.OneCycleLR(opt, max_lr=0.01, epochs=2, steps_per_epoch=5)
    assert opt.param_groups[0]["betas"] == (0.95, 0.99)
    for _ in range(2):
        opt.step()
        scheduler.step()
    assert opt.param_groups[0]["betas"][0] == pytest.approx(0.85)
    assert opt.param_groups[0]["betas"][1] == 0.99


def test_one_cycle_lr_errors():
    with pytest.raises(ValueError, match="neither momentum nor betas"):
        sched.OneCycleLR(make_optimizer(optim.Adagrad), max_lr=1.0, total_steps=10)
    with pytest.raises(ValueError, match="total_steps, or epochs and steps_per_epoch"):
        sched.OneCycleLR(make_optimizer(), max_lr=1.0)
    with pytest.raises(ValueError, match="anneal_strategy"):
        sched.OneCycleLR(make_optimizer(), max_lr=1.0, total_steps=5, anneal_strategy="exp")


def test_sequential_lr_warmup_then_cosine():
    opt = make_optimizer(lr=1.0)
    warmup = sched.LinearLR(opt, start_factor=0.25, total_iters=3)
    cosine = sched.CosineAnnealingLR(opt, T_max=4)
    scheduler = sched.SequentialLR(opt, [warmup, cosine], milestones=[3])
    lrs = lr_sequence(scheduler, 7)
    cosine_part = [(1 + math.cos(math.pi * e / 4)) / 2 for e in range(5)]
    np.testing.assert_allclose(lrs, [0.25, 0.5, 0.75] + cosine_part, rtol=1e-14, atol=1e-16)


def chained_sequence(schedulers, steps):
    """The first group's lr after construction and after each step, every scheduler stepped in turn."""
    opt = schedulers[0].optimizer
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(steps):
        opt.step()
        for scheduler in schedulers:
            scheduler.step()
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


def test_two_schedulers_on_one_optimizer_chain():
    opt = make_optimizer(lr=1.0)
    both = [sched.ExponentialLR(opt, gamma=0.9), sched.StepLR(opt, step_size=3, gamma=0.5)]
    lrs = chained_sequence(both, 8)
    np.testing.assert_allclose(lrs, [0.9**e * 0.5 ** (e // 3) for e in range(9)], rtol=1e-14)


def test_a_warm_up_chained_before_a_cosine_scales_it():
    # LinearLR multiplies the cosine's current value by the ratio of its factors: product of the two
    opt = make_optimizer(lr=1.0)
    both = [sched.LinearLR(opt, start_factor=0.5, total_iters=4), sched.CosineAnnealingLR(opt, T_max=10)]
    lrs = chained_sequence(both, 9)
    expected = [min(0.5 + 0.125 * e, 1.0) * (1 + math.cos(math.pi * e / 10)) / 2 for e in range(10)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-13)


CHAINS = {
    "Exponential+Step": lambda lib, opt: [lib.ExponentialLR(opt, 0.9), lib.StepLR(opt, 3, gamma=0.5)],
    "Linear+Cosine": lambda lib, opt: [lib.LinearLR(opt, 0.2, total_iters=5), lib.CosineAnnealingLR(opt, 6, 0.001)],
    "MultiStep+Linear-decay+Exponential": lambda lib, opt: [
        lib.MultiStepLR(opt, [3, 7, 7]), lib.LinearLR(opt, 1.0, 0.5, total_iters=8), lib.ExponentialLR(opt, 0.95)],
}


@pytest.mark.parametrize("name", CHAINS)
def test_chained_schedulers_match_torch(name):
    torch = pytest.importorskip("torch")
    results = []
    for lib, optim_lib, param in ((sched, optim, lambda: gt.zeros(2, requires_grad=True)),
                                  (torch.optim.lr_scheduler, torch.optim, lambda: torch.zeros(2, requires_grad=True))):
        opt = optim_lib.SGD([{"params": [param()]}, {"params": [param()], "lr": 0.05}], lr=0.1)
        schedulers = CHAINS[name](lib, opt)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PyTorch warns about steps without gradients
            lrs = [[g["lr"] for g in opt.param_groups]]
            for _ in range(20):
                opt.step()
                for scheduler in schedulers:
                    scheduler.step()
                lrs.append([g["lr"] for g in opt.param_groups])
        results.append(np.array(lrs))
    np.testing.assert_array_equal(*results)


def test_sequential_lr_errors():
    opt, other = make_optimizer(), make_optimizer()
    step = sched.StepLR(opt, 2)
    with pytest.raises(ValueError, match="one milestone fewer"):
        sched.SequentialLR(opt, [step, sched.ExponentialLR(opt, 0.9)], milestones=[])
    with pytest.raises(ValueError, match="another optimizer"):
        sched.SequentialLR(opt, [step, sched.ExponentialLR(other, 0.9)], milestones=[2])
    with pytest.raises(ValueError, match="ReduceLROnPlateau"):
        sched.SequentialLR(opt, [step, sched.ReduceLROnPlateau(opt)], milestones=[2])


def test_reduce_lr_on_plateau():
    opt = make_optimizer(lr=1.0)
    scheduler = sched.ReduceLROnPlateau(opt, factor=0.5, patience=1, cooldown=1, min_lr=0.2)
    losses = [5.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 3.0]
    lrs = []
    for loss in losses:
        scheduler.step(gt.tensor(loss))
        lrs.append(scheduler.get_last_lr()[0])
    # two bad epochs exceed patience 1 -> halve; one cooldown epoch ignores badness; floor at min_lr
    assert lrs == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25]
    for _ in range(3):
        scheduler.step(3.0)
    assert scheduler.get_last_lr() == [0.2]


def test_reduce_lr_on_plateau_max_mode_abs_threshold():
    opt = make_optimizer(lr=1.0)
    scheduler = sched.ReduceLROnPlateau(opt, mode="max", patience=0, threshold=0.5, threshold_mode="abs")
    scheduler.step(1.0)
    scheduler.step(1.4)  # not better by 0.5 -> reduce
    assert scheduler.get_last_lr() == [0.1]
    scheduler.step(2.0)  # better than 1.0 + 0.5
    assert scheduler.get_last_lr() == [0.1] and scheduler.best == 2.0


def test_reduce_lr_on_plateau_reduces_groups_added_later():
    """A group added after the scheduler was built is reduced too (with the one min_lr); min_lr given
    per group has no entry for it, which raises instead of skipping the group."""
    a, b = gt.zeros(2, requires_grad=True), gt.zeros(2, requires_grad=True)
    opt = optim.SGD([a], lr=1.0)
    scheduler = sched.ReduceLROnPlateau(opt, patience=0, min_lr=0.05)
    opt.add_param_group({"params": [b], "lr": 1.0})
    for _ in range(3):
        scheduler.step(1.0)
    assert scheduler.get_last_lr() == [0.05, 0.05]
    opt = optim.SGD([a], lr=1.0)
    scheduler = sched.ReduceLROnPlateau(opt, patience=0, min_lr=[0.0])
    opt.add_param_group({"params": [b], "lr": 1.0})
    scheduler.step(1.0)
    with pytest.raises(RuntimeError, match="ReduceLROnPlateau: the optimizer has 2 parameter groups but min_lr"):
        scheduler.step(1.0)


def test_get_last_lr_is_a_copy():
    scheduler = sched.StepLR(make_optimizer(), 1)
    scheduler.get_last_lr().append(5)
    assert scheduler.get_last_lr() == [0.1]


def test_resume_needs_initial_lr():
    with pytest.raises(KeyError, match="initial_lr"):
        sched.StepLR(make_optimizer(), 2, last_epoch=3)


SCHEDULERS = {
    "StepLR": lambda lib, opt: lib.StepLR(opt, step_size=3, gamma=0.5),
    "MultiStepLR": lambda lib, opt: lib.MultiStepLR(opt, milestones=[2, 5, 5, 9], gamma=0.3),
    "ExponentialLR": lambda lib, opt: lib.ExponentialLR(opt, gamma=0.9),
    "CosineAnnealingLR": lambda lib, opt: lib.CosineAnnealingLR(opt, T_max=7, eta_min=0.001),
    "LinearLR": lambda lib, opt: lib.LinearLR(opt),
    "LinearLR-decay": lambda lib, opt: lib.LinearLR(opt, start_factor=1.0, end_factor=0.1, total_iters=10),
    "LambdaLR": lambda lib, opt: lib.LambdaLR(opt, lambda e: 1 / (e + 1)),
    "OneCycleLR": lambda lib, opt: lib.OneCycleLR(opt, max_lr=[1.0, 0.5], total_steps=25),
    "OneCycleLR-3phase": lambda lib, opt: lib.OneCycleLR(
        opt, max_lr=1.0, epochs=5, steps_per_epoch=5, three_phase=True, anneal_strategy="linear"),
    "SequentialLR": lambda lib, opt: lib.SequentialLR(
        opt, [lib.LinearLR(opt, start_factor=0.1, total_iters=4), lib.CosineAnnealingLR(opt, T_max=10)],
        milestones=[5]),
    "SequentialLR-3": lambda lib, opt: lib.SequentialLR(
        opt, [lib.ExponentialLR(opt, 0.9), lib.StepLR(opt, 2), lib.LinearLR(opt)], milestones=[3, 8]),
}


def run_schedule(lib, optimizer_cls, param, make, steps=25):
    opt = optimizer_cls([{"params": [param()]}, {"params": [param()], "lr": 0.05}], lr=0.1)
    scheduler = make(lib, opt)
    lrs = [scheduler.get_last_lr()]
    for _ in range(steps):
        opt.step()
        scheduler.step()
        lrs.append(scheduler.get_last_lr())
    momenta = [g.get("betas", g.get("momentum")) for g in opt.param_groups]
    return np.array(lrs), momenta


@pytest.mark.parametrize("name", SCHEDULERS)
@pytest.mark.parametrize("optimizer_name", ["SGD", "Adam"])
def test_matches_torch(name, optimizer_name):
    torch = pytest.importorskip("torch")
    make = SCHEDULERS[name]
    ours, our_momenta = run_schedule(sched, getattr(optim, optimizer_name), lambda: gt.zeros(2, requires_grad=True),
                                     make)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyTorch warns about steps without gradients
        theirs, their_momenta = run_schedule(torch.optim.lr_scheduler, getattr(torch.optim, optimizer_name),
                                             lambda: torch.zeros(2, requires_grad=True), make)
    np.testing.assert_array_equal(ours, theirs)
    assert our_momenta == pytest.approx(their_momenta)


def test_reduce_lr_on_plateau_matches_torch():
    torch = pytest.importorskip("torch")
    metrics = [3.0, 2.0, 2.5, 2.0, 2.0, 1.99999, 2.1, 2.2, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    results = []
    for lib, param in ((sched, gt.zeros(1, requires_grad=True)), (torch.optim.lr_scheduler,
                                                                   torch.zeros(1, requires_grad=True))):
        opt_cls = optim.SGD if lib is sched else torch.optim.SGD
        opt = opt_cls([param], lr=1.0)
        scheduler = lib.ReduceLROnPlateau(opt, factor=0.5, patience=2, cooldown=1, threshold=1e-3)
        lrs = []
        for metric in metrics:
            scheduler.step(metric)
            lrs.append(scheduler.get_last_lr()[0])
        results.append(lrs)
    assert results[0] == results[1]
    assert min(results[0]) < 1.0


@pytest.mark.parametrize("name", SCHEDULERS)
def test_state_dict_resumes_schedule(name):
    make = SCHEDULERS[name]
    straight, _ = run_schedule(sched, optim.SGD, lambda: gt.zeros(2, requires_grad=True), make, steps=12)

    params = [gt.zeros(2, requires_grad=True), gt.zeros(2, requires_grad=True)]
    opt = optim.SGD([{"params": params[:1]}, {"params": params[1:], "lr": 0.05}], lr=0.1)
    scheduler = make(sched, opt)
    for _ in range(5):
        opt.step()
        scheduler.step()
    opt_state, sched_state = opt.state_dict(), scheduler.state_dict()

    new_opt = optim.SGD([{"params": params[:1]}, {"params": params[1:], "lr": 0.05}], lr=0.1)
    new_scheduler = make(sched, new_opt)
    new_opt.load_state_dict(opt_state)
    new_scheduler.load_state_dict(sched_state)
    resumed = []
    for _ in range(7):
        new_opt.step()
        new_scheduler.step()
        resumed.append(new_scheduler.get_last_lr())
    np.testing.assert_array_equal(np.array(resumed), straight[6:])
