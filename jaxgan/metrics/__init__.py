"""Sample-quality metrics: FID, KID, Inception Score and precision/recall, in JAX.

    feats = jaxgan.metrics.InceptionFeatures(weights_path)   # pytorch-fid's FID Inception-v3
    out = feats(images_uint8_nhwc)                            # {"pool3": [N, 2048], "logits": [N, 1008]}
    mu, sigma = jaxgan.metrics.feature_statistics(out["pool3"])
    jaxgan.metrics.frechet_distance(mu, sigma, mu_ref, sigma_ref)

Every score takes features, so any network can stand in for Inception
(`ModuleFeatures`); only the official FID weights give numbers called FID.
"""

from jaxgan.metrics.features import (BatchedApply, FeatureNetwork, InceptionFeatures,
                                     ModuleFeatures, check_images, load_fid_inception, to_uint8)
from jaxgan.metrics.inception import FIDInceptionV3
from jaxgan.metrics.scores import (feature_statistics, frechet_distance, inception_score,
                                   kernel_inception_distance, precision_recall,
                                   trace_sqrt_product)
from jaxgan.metrics.weights import read_torch_file

__all__ = ["BatchedApply", "FIDInceptionV3", "FeatureNetwork", "InceptionFeatures",
           "ModuleFeatures", "check_images", "feature_statistics", "frechet_distance",
           "inception_score", "kernel_inception_distance", "load_fid_inception",
           "precision_recall", "read_torch_file", "to_uint8", "trace_sqrt_product"]
