"""Each metric against an independent reference, on features made here (no network needed)."""

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric

from metrics.fid import FeatureMoments, fid, fid_from_moments, statistics
from metrics.inception_score import inception_score
from metrics.ipd import instance_perceptual_distance
from metrics.kid import kid
from metrics.psnr import psnr


@pytest.fixture
def feats():
    rng = np.random.default_rng(3)
    a = rng.normal(0.5, 1.0, (300, 16)) @ rng.normal(size=(16, 16)) * 0.3
    b = rng.normal(0.8, 1.2, (250, 16)) @ rng.normal(size=(16, 16)) * 0.3
    return a.astype(np.float32), b.astype(np.float32)


def test_fid_matches_scipy_sqrtm(feats):
    a, b = (f.astype(np.float64) for f in feats)
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
    assert fid(*feats) == pytest.approx(expected, rel=1e-9)


def test_fid_with_equal_covariances_is_the_squared_mean_difference(feats):
    a = feats[0].astype(np.float64)
    shift = np.linspace(-1, 1, a.shape[1])
    assert fid(a, a + shift) == pytest.approx(float(shift @ shift), rel=1e-7, abs=1e-9)
    assert fid(a, a) == pytest.approx(0.0, abs=1e-7)


def test_moments_merge_exactly_and_give_np_cov(feats):
    a, b = feats
    merged = FeatureMoments.of(a[:100]).merge(FeatureMoments.of(a[100:]))
    whole = FeatureMoments.of(a)
    assert merged.n == 300 and np.allclose(merged.total, whole.total, rtol=1e-12)
    mu, sigma = statistics(a)
    assert np.allclose(merged.mean(), mu, rtol=1e-12) and np.allclose(merged.covariance(), sigma, rtol=1e-9, atol=1e-12)
    assert fid_from_moments(merged, FeatureMoments.of(b)) == pytest.approx(fid(a, b), rel=1e-8)


def test_fid_kid_is_agree_with_torch_fidelity_feature_functions(feats):
    a, b = feats
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    ref = fid_statistics_to_metric(fid_features_to_statistics(ta), fid_features_to_statistics(tb), verbose=False)
    assert fid(a, b) == pytest.approx(ref["frechet_inception_distance"], rel=1e-6)
    ref = kid_features_to_metric(ta, tb, kid_subsets=20, kid_subset_size=200, verbose=False)
    mean, std = kid(a, b, subsets=20, subset_size=200)
    assert mean == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-5)
    assert std == pytest.approx(ref["kernel_inception_distance_std"], rel=1e-4)
    logits = np.random.default_rng(5).normal(0, 2, (200, 30)).astype(np.float32)
    ref = isc_features_to_metric(torch.from_numpy(logits), splits=10)
    mean, std = inception_score(logits, splits=10)
    assert mean == pytest.approx(ref["inception_score_mean"], rel=1e-10)
    assert std == pytest.approx(ref["inception_score_std"], rel=1e-8)


def test_inception_score_against_scipy_entropy():
    logits = np.random.default_rng(1).normal(0, 3, (40, 12))
    p = scipy.special.softmax(logits, axis=1)
    expected = np.exp(np.mean([scipy.stats.entropy(pi, p.mean(0)) for pi in p]))
    mean, std = inception_score(logits, splits=1, shuffle=False)
    assert mean == pytest.approx(expected, rel=1e-12) and std == 0
    one_class = np.full((20, 5), -10.0)
    one_class[:, 2] = 10
    assert inception_score(one_class, splits=2)[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 10 images"):
        inception_score(logits[:5])


def test_kid_zero_in_expectation_and_positive_for_different_sets(feats):
    a, b = feats
    assert abs(kid(a[:150], a[150:], subsets=10)[0]) < kid(a, b, subsets=10)[0]
    # A subset size that reaches a set's size means the whole sets, once, with no std.
    assert kid(a, b, subset_size=5000)[0] == pytest.approx(kid(a, b, subset_size=250)[0])
    assert np.isnan(kid(a, b, subset_size=250)[1]) and not np.isnan(kid(a, b, subset_size=249, subsets=5)[1])


def test_ipd_by_hand():
    orig = np.array([[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]])
    rec = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    assert instance_perceptual_distance(orig, rec).tolist() == [5.0, 0.0]
    with pytest.raises(ValueError):
        instance_perceptual_distance(orig, rec[:1])


def test_psnr_by_hand():
    a = np.zeros((2, 2, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 255
    assert psnr(a, b) == pytest.approx(10 * np.log10(12))
    assert psnr(a, a) == float("inf")


def test_low_rank_fid_is_exact_for_small_sets():
    from metrics.fid import fid, fid_low_rank, statistics

    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(20, 64)), rng.normal(size=(15, 64)) * 1.4 + 0.3
    mu1, s1 = statistics(a)
    mu2, s2 = statistics(b)
    # tr sqrt(S1 S2) = tr sqrt(S1^1/2 S2 S1^1/2), a symmetric PSD matrix whose eigenvalues are stable.
    w, v = np.linalg.eigh(s1)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root @ s2 @ root)
    exact = (mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(inner, 0, None)).sum()
    # (the reference itself carries sqrt(round-off) from its 44 zero eigenvalues: about 2e-6 here)
    assert fid_low_rank(a, b) == pytest.approx(exact, rel=1e-7)
    big = rng.normal(size=(80, 64))
    assert fid_low_rank(big, big[::-1] + 0.1) == pytest.approx(fid(big, big[::-1] + 0.1), rel=1e-9)  # n > d: fid


def test_kid_from_whole_kernel_matrices_equals_the_per_subset_products(feats, monkeypatch):
    import metrics.kid as kid_module

    a, b = feats
    fast = kid(a, b, subsets=30, subset_size=120)
    monkeypatch.setattr(kid_module, "GRAM_MAX_ENTRIES", 0)  # the per-subset route, as for large sets
    slow = kid(a, b, subsets=30, subset_size=120)
    assert fast[0] == pytest.approx(slow[0], rel=1e-12) and fast[1] == pytest.approx(slow[1], rel=1e-10)
    assert slow[1] > 0


def test_fid_reference_is_reusable_and_handles_a_singular_reference(feats):
    from metrics.fid import FIDReference

    a, b = (f.astype(np.float64) for f in feats)
    singular = np.concatenate([a[:, :8], a[:, :8]], axis=1)  # rank 8 of 16: Cholesky fails
    for ref_features in (a, singular):
        reference = FIDReference(ref_features)
        s1, s2 = np.cov(ref_features, rowvar=False), np.cov(b, rowvar=False)
        covmean = scipy.linalg.sqrtm(s1 @ s2).real
        diff = ref_features.mean(0) - b.mean(0)
        expected = diff @ diff + np.trace(s1 + s2 - 2 * covmean)
        assert reference.distance(b) == pytest.approx(expected, rel=1e-6)
        assert reference.distance(b) == reference.distance(b.copy())  # nothing of the first call was overwritten
