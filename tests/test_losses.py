import math

import jax.numpy as jnp
import numpy as np
import pytest

from jaxgan import losses

REAL = jnp.array([2.0, -1.0])
FAKE = jnp.array([0.5, -3.0])


def log_sigmoid(x):
  return math.log(1 / (1 + math.exp(-x)))


def log_one_minus_sigmoid(x):
  return math.log(1 - 1 / (1 + math.exp(-x)))


# Hand-computed from the definitions (D(x) = sigmoid(logit)).
BCE_D = (-(log_sigmoid(2.0) + log_sigmoid(-1.0)) / 2
         - (log_one_minus_sigmoid(0.5) + log_one_minus_sigmoid(-3.0)) / 2)
EXPECTED = {
    "non_saturating": (BCE_D, -(log_sigmoid(0.5) + log_sigmoid(-3.0)) / 2),
    "minimax": (BCE_D, (log_one_minus_sigmoid(0.5) + log_one_minus_sigmoid(-3.0)) / 2),
    # D: mean(relu(1-[2,-1])) = (0+2)/2 = 1; mean(relu(1+[0.5,-3])) = (1.5+0)/2 = 0.75
    "hinge": (1.75, 1.25),
    # D: mean fake - mean real = -1.25 - 0.5; G: -mean fake
    "wasserstein": (-1.75, 1.25),
    # D: 0.5*mean([1, 4]) + 0.5*mean([0.25, 9]); G: 0.5*mean([0.25, 16])
    "least_squares": (0.5 * 2.5 + 0.5 * 4.625, 0.5 * 8.125),
}


@pytest.mark.parametrize("name", losses.LOSSES)
def test_loss_values_match_hand_computation(name):
  d_expected, g_expected = EXPECTED[name]
  np.testing.assert_allclose(losses.discriminator_loss(name, REAL, FAKE), d_expected, rtol=1e-6)
  np.testing.assert_allclose(losses.generator_loss(name, FAKE), g_expected, rtol=1e-6)


def test_log_sigmoid_forms_are_stable_for_large_logits():
  big = jnp.array([80.0, -80.0])
  assert np.isfinite(losses.discriminator_loss("non_saturating", big, -big))
  np.testing.assert_allclose(losses.generator_loss("non_saturating", jnp.array([-100.0])), 100.0)


def test_unknown_loss_lists_the_valid_ones():
  with pytest.raises(ValueError, match="valid losses: non_saturating, minimax, hinge"):
    losses.discriminator_loss("vanilla", REAL, FAKE)
  with pytest.raises(ValueError, match="unknown GAN loss 'wgan'"):
    losses.generator_loss("wgan", FAKE)


def test_one_sided_label_smoothing_matches_hand_computation():
  eps = 0.1
  real_term = -((1 - eps) * (log_sigmoid(2.0) + log_sigmoid(-1.0))
                + eps * (log_one_minus_sigmoid(2.0) + log_one_minus_sigmoid(-1.0))) / 2
  fake_term = -(log_one_minus_sigmoid(0.5) + log_one_minus_sigmoid(-3.0)) / 2  # targets stay 0
  for name in ("non_saturating", "minimax"):
    np.testing.assert_allclose(losses.discriminator_loss(name, REAL, FAKE, label_smoothing=eps),
                               real_term + fake_term, rtol=1e-6)
  # LSGAN: real target 0.9: 0.5*mean([(2-0.9)^2, (-1-0.9)^2]) + 0.5*mean([0.25, 9])
  np.testing.assert_allclose(
      losses.discriminator_loss("least_squares", REAL, FAKE, label_smoothing=eps),
      0.5 * (1.21 + 3.61) / 2 + 0.5 * 4.625, rtol=1e-6)
  np.testing.assert_allclose(losses.discriminator_loss("hinge", REAL, FAKE, label_smoothing=0.0),
                             1.75)
  with pytest.raises(ValueError, match="label_smoothing has no meaning for the hinge loss"):
    losses.discriminator_loss("hinge", REAL, FAKE, label_smoothing=0.1)
  with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\), got 1.5"):
    losses.check_label_smoothing("non_saturating", 1.5)
