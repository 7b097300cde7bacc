"""The registries: one shape for every extension point, names known before anything is imported."""
import subprocess
import sys
import textwrap

import pytest

from lt_bench import registries
from lt_bench.errors import ConfigError
from lt_bench.registry import Registry


@pytest.mark.parametrize("registry", registries.ALL, ids=lambda r: r.variable)
def test_source_listing_equals_what_importing_registers(registry):
    """names() read from the source (no import) must be exactly what the modules register,
    so validation before torch is imported names the same choices the run builds."""
    declared = registry.declared_names()
    if registry is registries.DETECTION_LOSSES:
        pytest.importorskip("mmdet", reason="detection losses import the detection extra's torch code")
    registry._load()
    assert sorted(declared) == sorted(registry._entries) == registry.names()
    assert declared, f"{registry.kind}: nothing registered"
    for name in declared:
        assert registry.get(name).cls.name == name


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown sampler 'balanced'; valid: class_balanced, random, sqrt"):
        registries.SAMPLERS.check("balanced")
    with pytest.raises(ConfigError, match=r"unknown stage2.sampler 'x'"):
        registries.SAMPLERS.get("x", "stage2.sampler")


def test_a_new_extension_is_one_module(tmp_path, monkeypatch):
    """A module dropped into a registry's source package registers itself: nothing else lists it."""
    import lt_bench
    from lt_bench.registry import PACKAGE_ROOT
    package = PACKAGE_ROOT / "stages" / "losses"
    module = package / "zz_test_focal.py"
    module.write_text(textwrap.dedent('''
        from lt_bench.stages.losses import STAGE1_LOSSES, Stage1Loss

        @STAGE1_LOSSES.register("zz_focal")
        class Focal(Stage1Loss):
            def __call__(self, logits, labels):
                return self.activation.loss(logits, labels)
    '''))
    try:
        fresh = Registry("stage1.loss", "STAGE1_LOSSES", ("lt_bench.stages.losses",))
        assert "zz_focal" in fresh.declared_names() and "activation" in fresh.names()
        # a config naming it passes the import-light check, in a fresh interpreter
        code = ("from lt_bench.registries import STAGE1_LOSSES; STAGE1_LOSSES.check('zz_focal'); "
                "import sys; assert 'torch' not in sys.modules; print('ok')")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=lt_bench.__path__[0])
        assert out.stdout.strip() == "ok", out.stderr
    finally:
        module.unlink()


def test_a_registered_name_twice_is_refused():
    registry = Registry("thing", "THINGS", ())

    @registry.register("a")
    class A:
        pass

    with pytest.raises(ValueError, match="thing 'a' is registered twice"):
        @registry.register("a")
        class B:
            pass
