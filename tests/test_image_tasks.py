"""The image tasks: shapes and costs, deterministic evaluation, the VAE's bounds, the probe, exact
gradients by enumeration, and (slow) the quick-preset acceptance runs on real data."""

from __future__ import annotations

import math

import pytest
import torch

import gradbench
from gradbench import data, gradstats, ops
from gradbench.errors import UnsupportedError
from gradbench.registry import get_estimator_class, get_task_class
from gradbench.runner import resolve

IMAGE_TASKS = ["classify", "autoencode", "vae"]


@pytest.mark.parametrize("name", IMAGE_TASKS)
def test_batch_cost_and_evaluation(name):
    cls = get_task_class(name)
    torch.manual_seed(0)
    task = cls(cls.make_config({"batch_size": 7}, "quick"))
    logits, cost_fn = task.train_batch()
    assert logits.shape == (7, *task.node.shape)
    y = ops.forward(task.node, logits.detach())
    c = cost_fn(y)
    assert c.shape == (7,) and torch.isfinite(c).all()
    stacked = cost_fn(torch.stack([y, y, y]))  # leading sample dims, as estimators use them
    assert stacked.shape == (3, 7)
    torch.testing.assert_close(stacked[2], c)
    relaxed = torch.rand_like(logits)  # continuous inputs (relaxed samples) are accepted too
    assert torch.isfinite(cost_fn(relaxed)).all()
    first, second = task.evaluate(), task.evaluate()
    assert first == second and set(first) == set(cls.metrics)  # a fixed generator: deterministic
    assert cls.main_metric in cls.metrics


def test_every_estimator_runs_where_its_node_fits_and_is_refused_clearly_elsewhere():
    with pytest.raises(UnsupportedError, match="does not support the 'sign' node of task 'classify'"):
        resolve("classify", "gumbel")
    for est in ("dab", "ste", "gumbel", "reinforce", "relax"):
        for task in ("classify:node=bernoulli", "autoencode", "vae", "vae:node=categorical,latents=4"):
            resolve(task, est)  # no error: the pair is supported
    for est in ("dab", "ste"):
        for task in ("classify", "classify:node=threshold", "autoencode:node=argmax", "autoencode:node=threshold"):
            resolve(task, est)


def test_binarization_is_part_of_the_run_key_and_the_table_label():
    cls = get_task_class("vae")
    assert cls.label_for(cls.make_config({"binarize": "static"}), "quick") == "vae(binarize=static)"
    a, b = resolve("vae", "ste"), resolve("vae:binarize=threshold", "ste")
    assert a.run_id != b.run_id


def _tiny_vae(latents: int = 4, **extra):
    cls = get_task_class("vae")
    torch.manual_seed(0)
    task = cls(cls.make_config({"latents": latents, "batch_size": 8, **extra}, "quick"))
    with torch.no_grad():  # away from the symmetric initialisation, so the bounds differ visibly
        for p in task.parameters():
            p.normal_(0, 0.5)
    return task


def test_vae_elbo_below_iw_bound_below_log_likelihood_and_tighter_with_k():
    """Exact log p(x) and ELBO by enumerating the 16 codes; the IW bound is sampled (fixed generator)
    over 360 test images. The measured gaps (k=1: -52.6, k=10: -50.0, k=100: -49.2, k=1000: -48.6,
    log p(x) -48.4) are tens of standard errors wide, so these comparisons do not fail by chance."""
    task = _tiny_vae()
    x = task.data.test_x
    with torch.no_grad():
        logits = task.encoder(x)
        codes = ops.all_events(task.node).unsqueeze(1).expand(16, *logits.shape)
        log_joint = task.log_likelihood(codes, x) + ops.log_prob(task.node, task.prior_logits.expand_as(codes), codes)
        log_px = torch.logsumexp(log_joint, 0)
        q = ops.log_prob(task.node, logits, codes).exp()
        elbo = (q * task.log_likelihood(codes, x)).sum(0) - task.kl(logits)
        task.eval_generator.manual_seed(0)
        bounds = [float(task.iw_bound(x, k).mean()) for k in (1, 10, 100, 1000)]
    assert (elbo <= log_px + 1e-4).all() and (log_px <= 0).all()
    assert float(elbo.mean()) - 0.5 < bounds[0]  # k=1 is an unbiased estimate of the ELBO
    assert bounds == sorted(bounds) and bounds[-1] - bounds[0] > 2
    assert bounds[-1] <= float(log_px.mean()) + 0.05
    metrics = task.evaluate()
    assert metrics["test_elbo"] <= metrics["test_iw_bound"] <= 0


def test_probe_separates_a_label_code_and_not_a_random_one():
    from gradbench.tasks.autoencode import probe_accuracy

    s = data.ImageSet("digits", "static", torch.device("cpu"))
    g = torch.Generator().manual_seed(0)

    def label_code(y):  # one-hot of the label plus random bits
        return torch.cat([torch.nn.functional.one_hot(y, 10).float(),
                          torch.bernoulli(torch.full((len(y), 40), 0.5), generator=g)], 1)

    assert probe_accuracy(label_code(s.train_y), s.train_y, label_code(s.test_y), s.test_y) >= 0.99
    # random codes: chance is 0.1; with 360 test points its sd is 0.016, so 0.2 is > 6 sd away
    rand_train = torch.bernoulli(torch.full((len(s.train_y), 50), 0.5), generator=g)
    rand_test = torch.bernoulli(torch.full((len(s.test_y), 50), 0.5), generator=g)
    assert probe_accuracy(rand_train, s.train_y, rand_test, s.test_y) < 0.2


@pytest.mark.parametrize("task_spec", ["vae", "vae:node=categorical,classes=3", "autoencode:node=bernoulli"])
def test_exact_gradient_by_enumeration_agrees_with_unbiased_and_rejects_biased(task_spec):
    """On tiny latent spaces (16 or 81 codes) the enumeration gradient is the reference: reinforce (with the
    VAE's KL reaching the encoder directly) must pass the bias test (false failure <= 0.1%), ste must fail."""
    name, _, extra = task_spec.partition(":")
    values = dict(kv.split("=") for kv in extra.split(",")) if extra else {}
    values = {k: v if k == "node" else int(v) for k, v in values.items()}
    cls = get_task_class(name)
    torch.manual_seed(0)
    task = cls(cls.make_config({"latents": 4, "batch_size": 8, **values}, "quick"))
    assert task.exact_gradient() is not None
    rf = get_estimator_class("reinforce")
    ste = get_estimator_class("ste")
    unbiased = gradstats.measure(rf(task.node, rf.make_config({"baseline": "rloo", "samples": 4})), task, 3000,
                                 seed=3, label="t", step=0)
    biased = gradstats.measure(ste(task.node, ste.make_config({})), task, 3000, seed=3, label="t", step=0)
    assert unbiased["reference"] == "exact" and biased["reference"] == "exact"
    assert unbiased["batched"] and biased["batched"]  # the VAE's direct KL path too, via repeated_fixed_batch
    assert unbiased["bias_p"] > 1e-3, unbiased
    assert biased["bias_p"] < 1e-6, biased
    assert unbiased["cosine"] > 0.99


def test_enumeration_is_skipped_for_large_latent_spaces():
    cls = get_task_class("vae")
    task = cls(cls.make_config({"batch_size": 4}, "quick"))  # 2^200 codes
    assert task.exact_gradient() is None


# --- the acceptance runs (real data, quick presets) -----------------------------------------

def _run(tmp_path, task, estimator, **kw):
    record = gradbench.run(task=task, estimator=estimator, runs=str(tmp_path), device="cpu", **kw)
    assert record["status"] == "ok", record["error"]
    return {k: v["value"] for k, v in record["metrics"].items()}


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["ste", "dab"])
def test_classify_quick_reaches_80_percent_on_digits(tmp_path, estimator):
    assert _run(tmp_path, "classify", estimator)["accuracy"] >= 0.80


@pytest.mark.slow
def test_autoencode_quick_gumbel_probe_is_separable(tmp_path):
    assert _run(tmp_path, "autoencode", "gumbel")["probe_accuracy"] >= 0.5


@pytest.mark.slow
def test_vae_quick_relax_has_a_finite_negative_elbo(tmp_path):
    elbo = _run(tmp_path, "vae", "relax")["test_elbo"]
    assert math.isfinite(elbo) and elbo < 0


@pytest.mark.slow
@pytest.mark.skipif(not data.DEBIAN_FASHION.is_dir() and not __import__("os").environ.get("GRADBENCH_REQUIRE_DATA"),
                    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist); CI installs it")
def test_classify_fashion_mnist_300_steps_with_ste(tmp_path):
    assert _run(tmp_path, "classify:dataset=fashion-mnist", "ste", steps=300)["accuracy"] >= 0.6


def test_vae_batched_draws_match_the_loop():
    """The task-built repeated batch gives the same gradient distribution as K separate calls: with the
    same seed both paths draw the same noise only if they consume it alike, so compare statistics: the
    means agree within 5 standard errors per coordinate (Bonferroni over ~400 coordinates at 5 se gives a
    false-failure rate < 1e-3), and the average variances within 15% (3,000 draws: sd of the ratio ~3%)."""
    task = _tiny_vae(batch_size=8)
    rf = get_estimator_class("reinforce")
    est = rf(task.node, rf.make_config({"baseline": "rloo", "samples": 2}))
    params = task.encoder_parameters()
    assert gradstats.batch_mode(est, task, params) == "task"
    batched, used = gradstats.gradient_draws(est, task, 3000, seed=5)
    loop, used_loop = gradstats.gradient_draws(est, task, 3000, seed=6, batched=False)
    assert used and not used_loop
    se = (batched.var(0) / 3000 + loop.var(0) / 3000).sqrt()
    live = se > 0
    assert ((batched.mean(0) - loop.mean(0)).abs()[live] / se[live]).max() < 5
    ratio = batched.var(0).mean() / loop.var(0).mean()
    assert 0.85 < float(ratio) < 1.15


def _unbiased_bernoulli_estimators() -> list[str]:
    from gradbench.registry import list_estimators

    return [n for n in list_estimators()
            if get_estimator_class(n).unbiased and "bernoulli" in get_estimator_class(n).supports]


@pytest.mark.parametrize("name", _unbiased_bernoulli_estimators())
def test_unbiased_estimators_keep_the_vae_direct_kl_gradient(name):
    """Every registered estimator that claims unbiasedness, on a 4-latent VAE whose cost has a direct
    path to the encoder (the KL): 3,000 draws against the enumeration gradient, bias test with
    Bonferroni over coordinates (false failure <= 0.1%). Dropping the direct path fails it by far."""
    task = _tiny_vae()
    cls = get_estimator_class(name)
    stats = gradstats.measure(cls(task.node, cls.make_config({})), task, 3000, seed=11, label="t", step=0)
    assert stats["reference"] == "exact"
    assert stats["bias_p"] > 1e-3, stats
