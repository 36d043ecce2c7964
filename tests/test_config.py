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


@pytest.mark.parametrize("name, settings, field", [
    ("vlattice", {"alpha": 3.0}, "alpha"),
    ("lightgcn", {"backbone": "vbpr"}, "backbone"),
    ("ibmrec", {"mrdib_kl_weight": 1.0}, "mrdib_kl_weight"),
    ("vbpr", {"knn_k": 5}, "knn_k"),
    ("lightgcn", {"knn_method": "ivf"}, "knn_method"),
    ("vlattice", {"knn_nprobe": 8}, "knn_nprobe"),  # read by the approximate builder only
    ("bprmf", {"n_layers": 3}, "n_layers"),
    ("ibmrec", {"backbone": "vbpr", "beta": 2.0}, "beta"),  # no item graph, no GIB
    ("ibmrec", {"gib": False, "mask_temperature": 0.2}, "mask_temperature"),
    ("mrdib", {"mrdib_redundancy_estimator": "hsic", "mrdib_critic_hidden": 8},
     "mrdib_critic_hidden"),
    ("mrdib", {"backbone": "vbpr", "mrdib_synergy_weight": 1.0}, "mrdib_synergy_weight"),
])
def test_a_setting_the_model_does_not_read_is_refused(name, settings, field):
    from ibmrec_tf.config import ConfigError
    from ibmrec_tf.data import make_synthetic
    from ibmrec_tf.models import ModelConfig, build_model, check_settings, without_unread

    config = ModelConfig(**settings)
    with pytest.raises(ConfigError) as info:
        check_settings(name, config)
    assert info.value.field == field and "is not read by model" in str(info.value)
    data = make_synthetic(seed=0, num_users=20, num_items=15, interactions_per_user=4,
                          modality_dims={"image": 8, "text": 8})
    with pytest.raises(ConfigError):
        build_model(name, data, config)
    check_settings(name, without_unread(name, config))  # the shared setting, made acceptable


def test_every_setting_is_read_by_some_model_and_the_reads_are_fields():
    import dataclasses
    import itertools

    from ibmrec_tf.models import MODELS, ModelConfig, settings_read

    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    read = set()
    for name, backbone, estimator, knn in itertools.product(
            MODELS, ("vbpr", "vlightgcn", "lattice", "vlattice", "freedom", "mgcn"), ("dv", "hsic"),
            ("exact", "ivf")):
        got = settings_read(name, ModelConfig(backbone=backbone, knn_method=knn,
                                              mrdib_redundancy_estimator=estimator))
        assert got <= fields, got - fields
        read |= got
    assert read == fields, fields - read


@pytest.mark.slow
def test_every_flagfile_is_read_whole_by_its_model():
    """Each flagfile's settings are all read by its model (checked in a fresh process, whose
    flags each file sets afresh)."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    script = ("import sys\nfrom runners import common\nF = common.FLAGS\n"
              "for p in sys.argv[1:]:\n"
              "    F.unparse_flags(); F(['x', '--flagfile=' + p])\n"
              "    common.check_model_settings(F.model, common.model_config())\n"
              "print('ok')\n")
    paths = [str(p) for p in sorted((ROOT / "flags").glob("*.cfg"))]
    proc = subprocess.run([sys.executable, "-c", script, *paths], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr
