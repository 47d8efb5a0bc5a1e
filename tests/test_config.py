"""xpcnn.config: one scoped object for the kernels' knobs, read from the environment once."""
import os
import subprocess
import sys
import threading

import pytest

from xpcnn import config


def test_using_changes_the_settings_for_the_block_and_this_thread_only():
    before = config.get()
    seen_elsewhere = []
    with config.using(conv_workspace_bytes=4096) as inside:
        assert config.get() is inside and inside.conv_workspace_bytes == 4096
        worker = threading.Thread(target=lambda: seen_elsewhere.append(config.get().conv_workspace_bytes))
        worker.start()
        worker.join()
    assert config.get() == before and seen_elsewhere == [before.conv_workspace_bytes]


def test_bad_settings_are_refused_and_change_nothing():
    before = config.get()
    with pytest.raises(ValueError, match="xpcnn.config.using: conv_block_bytes must be a positive number of bytes, "
                                         "got 0"):
        with config.using(conv_block_bytes=0):
            pass
    with pytest.raises(TypeError, match="xpcnn.config.set: unknown setting 'workspace'; the settings are"):
        config.set(workspace=1)
    assert config.get() == before


def test_the_environment_is_read_once_at_import():
    env = dict(os.environ, XPCNN_WORKSPACE_MB="2", XPCNN_CONV_BLOCK_MB="0.5")
    code = ("import os, xpcnn; c = xpcnn.config.get(); os.environ['XPCNN_WORKSPACE_MB'] = '9'; "
            "print(c.conv_workspace_bytes, c.conv_block_bytes, xpcnn.config.get().conv_workspace_bytes)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == [str(2 * 2**20), str(2**19), str(2 * 2**20)]


def test_listing_backends_does_not_turn_on_jax_float64_for_the_process():
    pytest.importorskip("jax")
    code = ("import jax, xpcnn.cli; xpcnn.cli.main(['backends']); "
            "print('x64', jax.config.read('jax_enable_x64'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "x64 False" in out


@pytest.mark.parametrize("variable,value,message", [
    ("XPCNN_WORKSPACE_MB", "inf", "$XPCNN_WORKSPACE_MB must be a positive finite number of MiB (such as 512), "
                                  "got 'inf'"),
    ("XPCNN_WORKSPACE_MB", "-1", "$XPCNN_WORKSPACE_MB must be a positive finite number of MiB (such as 512), "
                                 "got '-1'"),                       # the MiB typed, not bytes
    ("XPCNN_CONV_BLOCK_MB", "nan", "$XPCNN_CONV_BLOCK_MB must be a positive finite number of MiB"),
    ("XPCNN_DEVICE_DATA_MB", "lots", "$XPCNN_DEVICE_DATA_MB must be a positive finite number of MiB"),
    ("XPCNN_FEW_LAUNCHES", "maybe", "$XPCNN_FEW_LAUNCHES must be auto, on or off, got 'maybe'"),
])
def test_a_bad_variable_is_one_error_naming_it_and_the_value(variable, value, message, monkeypatch):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError) as error:
        config._from_environment()
    assert str(error.value).startswith(message)


def test_a_bad_variable_does_not_break_the_import_and_the_command_line_says_it_in_one_line():
    env = dict(os.environ, XPCNN_WORKSPACE_MB="inf")
    code = ("import xpcnn\ntry:\n    xpcnn.config.get()\nexcept ValueError as e:\n    print('refused:', e)\n"
            "import xpcnn.cli, sys\nsys.exit(xpcnn.cli.main(['backends']))")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stdout.startswith("refused: $XPCNN_WORKSPACE_MB must be a positive finite number of MiB")
    assert result.stderr.strip().splitlines() == [
        "xpcnn backends: error: $XPCNN_WORKSPACE_MB must be a positive finite number of MiB (such as 512), got 'inf'"]
