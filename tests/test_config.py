"""One source of configuration: config fields, runner flags, flags.cfg, and the configs' checks."""

import dataclasses

import pytest
from absl import flags

from ibmrec_tf import config as config_lib
from ibmrec_tf.config import ConfigError, DataConfig, ModelConfig, TrainConfig
from runners import common

FLAGS = flags.FLAGS
CONFIGS = (DataConfig, ModelConfig, TrainConfig)


@pytest.fixture
def parsed_flags():
    """The runners' flags parsed from defaults, restored afterwards."""
    FLAGS.unparse_flags()
    FLAGS(["prog"])
    yield FLAGS
    FLAGS.unparse_flags()


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_every_config_field_is_a_flag_with_its_default_and_help(cls, parsed_flags):
    for field in dataclasses.fields(cls):
        assert field.name in common.DEFINED, field.name
        flag = FLAGS[field.name]
        assert flag.help.endswith(field.metadata["help"]), field.name  # enums prefix <a|b>: 
        default = field.default
        if isinstance(default, tuple):
            default = [str(v) for v in default]
        assert flag.default == default, field.name
        if field.metadata.get("choices"):
            assert set(flag.parser.enum_values) == set(field.metadata["choices"]), field.name


def test_every_runner_flag_is_recorded_or_an_invocation_flag():
    assert set(common.recorded_flags()) | set(common.INVOCATION_FLAGS) == set(common.DEFINED)
    assert not set(common.recorded_flags()) & set(common.INVOCATION_FLAGS)
    # Settings that change the computation are recorded (a missing one was once exported wrong).
    for name in ("item_layers", "precision", "modalities", "select_metric", "log_every"):
        assert name in common.recorded_flags()


def test_flags_cfg_round_trips(parsed_flags, tmp_path):
    changed = {"model": "ibmrec", "item_layers": "2", "alpha": "0.37", "modalities": "a,b",
               "fib": "false", "ks": "5,20", "precision": "mixed_bfloat16",
               "data_format": "json", "select_metric": "ndcg@20", "log_every": "3"}
    for name, value in changed.items():
        FLAGS[name].parse(value)
    text = common.flags_text()
    path = tmp_path / "flags.cfg"
    path.write_text(text)
    FLAGS.unparse_flags()
    FLAGS(["prog", f"--flagfile={path}"])
    assert common.flags_text() == text
    assert FLAGS.item_layers == 2 and FLAGS.alpha == 0.37 and FLAGS.fib is False
    assert common.model_config().precision == "mixed_bfloat16"
    assert common.train_config().ks == (5, 20) and common.data_config().modalities == ("a", "b")
    recorded = {name for _, name, _ in common.parse_flag_lines(text.splitlines())}
    unset_by_default = {n for n in common.recorded_flags() if FLAGS[n].value is None}
    assert recorded == set(common.recorded_flags()) - unset_by_default


@pytest.mark.parametrize("cls, changes, message", [
    (TrainConfig, {"learning_rate": -1.0}, "learning_rate must be > 0, got -1.0"),
    (TrainConfig, {"ks": (10, 50)}, "ks must include 20"),
    (TrainConfig, {"ks": (0, 20)}, "ks values must be >= 1"),
    (TrainConfig, {"select_metric": "auc@20"}, "select_metric must be recall@K"),
    (ModelConfig, {"tau": 0.0}, "tau must be > 0"),
    (ModelConfig, {"n_layers": 17}, "n_layers must be in [0, 16]"),
    (ModelConfig, {"precision": "float64"}, "precision must be one of float32"),
    (DataConfig, {"train_fraction": 0.0}, "train_fraction must be in (0.0, 1.0]"),
    (DataConfig, {"feature_noise_dims": -2}, "feature_noise_dims must be >= 0"),
])
def test_library_callers_get_the_checks(cls, changes, message):
    with pytest.raises(ConfigError) as err:
        cls(**changes)
    assert message in str(err.value)
    assert err.value.as_flag().startswith(f"--{err.value.field} ")


def test_flag_errors_name_the_flag(parsed_flags):
    FLAGS["learning_rate"].parse("-1")
    with pytest.raises(common.UsageError, match=r"^--learning_rate must be > 0, got -1.0$"):
        common.check_flags()


def test_recommender_get_config_says_how_to_rebuild():
    from ibmrec_tf.data import make_synthetic
    from ibmrec_tf.models import build_model

    model = build_model("bprmf", make_synthetic(seed=0, num_users=20, num_items=15,
                                                interactions_per_user=4), ModelConfig())
    with pytest.raises(NotImplementedError, match="built from a Dataset.*build_model"):
        model.get_config()


def test_projection_weights_are_its_own_under_a_dtype_policy():
    import tensorflow as tf
    from ibmrec_tf.layers import ModalityProjection

    layer = ModalityProjection(input_dims=[6, 4], output_dim=3, hidden_layers=1,
                               dtype="mixed_bfloat16")
    layer.build()
    assert sorted(v.name for v in layer.trainable_weights) == sorted(
        f"m{k}_{part}_{kind}" for k in (0, 1) for part in ("hidden0", "out")
        for kind in ("kernel", "bias"))
    assert all(v.dtype == "float32" for v in layer.weights)
    assert layer.compute_dtype == "bfloat16"
    out = layer([tf.ones([2, 6]), tf.ones([2, 4])])
    assert [o.dtype for o in out] == [tf.float32, tf.float32]
    assert config_lib.COMPUTE_DTYPES["mixed_bfloat16"] == layer.compute_dtype
