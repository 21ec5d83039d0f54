"""The package skeleton: package.xml, CMakeLists.txt, the message, versions, and the `lrm4d` CLI.

These run without ROS: package.xml is read with catkin_pkg (the parser colcon and rosdep use), and
the message with rosidl's own .msg parser when python3-rosidl is installed (Debian package).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

import lrm4d_core
from lrm4d_core import cli

ROOT = Path(__file__).resolve().parents[1]
MSG_DIR = ROOT / "msg"
MSG_COPY_DIR = ROOT / "ros2_lrm4d" / "msg_defs"
MSG_FILES = sorted(MSG_DIR.glob("*.msg"))

# Where Debian's python3-rosidl puts rosidl_adapter (pure Python, importable from any Python 3).
DEBIAN_ROSIDL_PARSER = Path("/usr/lib/python3/dist-packages/rosidl_adapter/parser.py")

GAUSSIAN_CLOUD_FIELDS = [
    ("std_msgs/Header", "header"),
    ("builtin_interfaces/Time", "window_start"),
    ("builtin_interfaces/Time", "window_end"),
    ("string", "model_id"),
    ("uint32", "count"),
    ("sensor_msgs/PointField[]", "fields"),
    ("bool", "is_bigendian"),
    ("uint32", "point_step"),
    ("uint8[]", "data"),
]


# ---------------------------------------------------------------------------------------------
# package.xml


@pytest.fixture(scope="module")
def package():
    from catkin_pkg.package import parse_package

    warnings: list[str] = []
    pkg = parse_package(str(ROOT / "package.xml"), warnings=warnings)
    assert warnings == []
    return pkg


def test_package_xml_metadata(package):
    assert package.name == "ros2_lrm4d"
    assert package.package_format == 3
    assert package.get_build_type() == "ament_cmake"
    assert [str(lic) for lic in package.licenses] == ["Apache-2.0"]
    assert package.maintainers and all(m.email for m in package.maintainers)
    assert "rosidl_interface_packages" in [g.name for g in package.member_of_groups]


def test_package_xml_dependencies(package):
    build_tools = {d.name for d in package.buildtool_depends}
    assert {"ament_cmake", "ament_cmake_python", "rosidl_default_generators"} <= build_tools
    run = {d.name for d in package.exec_depends}
    assert {"rclpy", "message_filters", "tf2_msgs", "rosidl_default_runtime"} <= run
    assert run & {"tf2_ros_py", "tf2_ros"}
    # Message dependencies are needed to build (rosidl) and to run.
    for name in ("builtin_interfaces", "std_msgs", "sensor_msgs"):
        assert name in {d.name for d in package.build_depends}
        assert name in run
    tests = {d.name for d in package.test_depends}
    assert {"ament_cmake_pytest", "python3-pytest"} <= tests


# ---------------------------------------------------------------------------------------------
# CMakeLists.txt


@pytest.fixture(scope="module")
def cmake() -> str:
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    return re.sub(r"#[^\n]*", "", text)  # drop comments


def test_cmake_generates_every_message(cmake):
    assert MSG_FILES, "msg/ has no .msg files"
    block = re.search(r"rosidl_generate_interfaces\s*\(\s*\$\{PROJECT_NAME\}(.*?)\)", cmake, re.DOTALL)
    assert block, "rosidl_generate_interfaces(${PROJECT_NAME} ...) not found"
    listed = set(re.findall(r'"?(msg/[A-Za-z0-9_]+\.msg)"?', block.group(1)))
    assert listed == {f"msg/{p.name}" for p in MSG_FILES}
    for dep in ("builtin_interfaces", "std_msgs", "sensor_msgs"):
        assert re.search(rf"find_package\(\s*{dep}\s+REQUIRED\s*\)", cmake)


def test_cmake_installs_python_scripts_launch_config(cmake):
    assert re.search(r"ament_python_install_package\(\s*lrm4d_core\s*\)", cmake)
    # rosidl already creates the `ros2_lrm4d` Python package: installing it again clashes.
    assert not re.search(r"ament_python_install_package\(\s*ros2_lrm4d", cmake)
    assert re.search(
        r"install\(\s*DIRECTORY\s+ros2_lrm4d/\s+DESTINATION\s+\$\{PYTHON_INSTALL_DIR\}/ros2_lrm4d"
        r'\s+PATTERN\s+"__init__\.py"\s+EXCLUDE',
        cmake,
    )
    for directory in ("launch", "config"):
        assert (ROOT / directory).is_dir() and any((ROOT / directory).iterdir())
        assert re.search(
            rf"install\(\s*DIRECTORY[^)]*\s{directory}[\s)][^)]*DESTINATION\s+share/\$\{{PROJECT_NAME\}}", cmake
        ), f"{directory}/ is not installed to share/${{PROJECT_NAME}}"
    programs = re.search(r"install\(\s*PROGRAMS(.*?)DESTINATION\s+lib/\$\{PROJECT_NAME\}", cmake, re.DOTALL)
    assert programs
    scripts = sorted((ROOT / "scripts").iterdir())
    assert set(programs.group(1).split()) == {f"scripts/{p.name}" for p in scripts}
    for script in scripts:
        assert os.access(script, os.X_OK), f"{script} is not executable"
        assert script.read_text(encoding="utf-8").startswith("#!/usr/bin/env python3\n")


# ---------------------------------------------------------------------------------------------
# Versions


def test_versions_agree(package):
    out = subprocess.run(
        [sys.executable, "setup.py", "--version"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    setup_version = out.strip().splitlines()[-1]
    assert package.version == setup_version == lrm4d_core.__version__


# ---------------------------------------------------------------------------------------------
# The ros2_lrm4d Python package (merged into the rosidl-generated one in a colcon build)


def test_shell_package_merges_into_generated_one():
    init = ROOT / "ros2_lrm4d" / "__init__.py"
    body = ast.parse(init.read_text(encoding="utf-8")).body
    assert len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
    assert isinstance(body[0].value.value, str), "ros2_lrm4d/__init__.py must hold only a docstring"
    assert not (ROOT / "ros2_lrm4d" / "msg").exists(), "ros2_lrm4d/msg would shadow the generated ros2_lrm4d.msg"


def test_core_never_imports_ros():
    ros_modules = {"rclpy", "ros2_lrm4d", "rosidl_runtime_py", "message_filters", "tf2_ros", "cv_bridge"}
    offenders = []
    for path in sorted((ROOT / "lrm4d_core").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in ros_modules]
    assert offenders == []


# ---------------------------------------------------------------------------------------------
# The message


def test_shipped_message_copies_are_identical():
    copies = sorted(MSG_COPY_DIR.glob("*.msg"))
    assert [p.name for p in copies] == [p.name for p in MSG_FILES]
    for canonical in MSG_FILES:
        assert (MSG_COPY_DIR / canonical.name).read_bytes() == canonical.read_bytes(), (
            f"ros2_lrm4d/msg_defs/{canonical.name} differs from msg/{canonical.name}: copy it over"
        )


def _rosidl_parser() -> types.ModuleType:
    """rosidl_adapter.parser from the environment, else from Debian's python3-rosidl; skip if neither."""
    try:
        return importlib.import_module("rosidl_adapter.parser")
    except ImportError:
        pass
    if not DEBIAN_ROSIDL_PARSER.is_file():
        pytest.skip("rosidl_adapter not available (apt-get install python3-rosidl, or source ROS 2)")
    # The parser module only uses the standard library: load that one file, leaving sys.path alone.
    spec = importlib.util.spec_from_file_location("_debian_rosidl_adapter_parser", DEBIAN_ROSIDL_PARSER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_message_parses_with_rosidl():
    parser = _rosidl_parser()
    for path in MSG_FILES:
        parser.parse_message_string("ros2_lrm4d", path.stem, path.read_text(encoding="utf-8"))
    spec = parser.parse_message_string(
        "ros2_lrm4d", "GaussianCloud4D", (MSG_DIR / "GaussianCloud4D.msg").read_text(encoding="utf-8")
    )
    assert [(str(f.type), f.name) for f in spec.fields] == GAUSSIAN_CLOUD_FIELDS
    assert spec.constants == []
    for field in spec.fields:
        assert field.annotations.get("comment"), f"field {field.name} has no comment"


def test_message_registers_with_rosbags():
    """Off ROS, the shells register the shipped .msg text with rosbags; round-trip one message."""
    import numpy as np
    from rosbags.typesys import Stores, get_typestore, get_types_from_msg

    name = "ros2_lrm4d/msg/GaussianCloud4D"
    store = get_typestore(Stores.ROS2_JAZZY)
    store.register(get_types_from_msg((MSG_COPY_DIR / "GaussianCloud4D.msg").read_text(encoding="utf-8"), name))
    T = store.types
    channels = "x y z t r g b scale_x scale_y scale_z scale_t ql_w ql_x ql_y ql_z qr_w qr_x qr_y qr_z opacity".split()
    fields = [
        T["sensor_msgs/msg/PointField"](name=c, offset=4 * i, datatype=7, count=1) for i, c in enumerate(channels)
    ]
    values = np.arange(3 * len(channels), dtype="<f4")
    stamp = T["builtin_interfaces/msg/Time"](sec=12, nanosec=500)
    msg = T[name](
        header=T["std_msgs/msg/Header"](stamp=stamp, frame_id="map"),
        window_start=T["builtin_interfaces/msg/Time"](sec=10, nanosec=0),
        window_end=stamp,
        model_id="tiny",
        count=3,
        fields=fields,
        is_bigendian=False,
        point_step=4 * len(channels),
        data=values.view(np.uint8),
    )
    back = store.deserialize_cdr(store.serialize_cdr(msg, name), name)
    assert back.count == 3 and back.point_step == 80 and back.header.frame_id == "map"
    assert [f.name for f in back.fields] == channels
    np.testing.assert_array_equal(back.data.view("<f4"), values)


# ---------------------------------------------------------------------------------------------
# The `lrm4d` command


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, **kwargs)


def test_console_script_version():
    exe = Path(sys.executable).parent / "lrm4d"
    if not exe.exists():
        pytest.skip("the lrm4d console script is not installed next to this Python (pip install -e .)")
    result = _run([str(exe), "--version"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"lrm4d {lrm4d_core.__version__}"


def test_ros_launcher_script_version():
    result = _run([sys.executable, str(ROOT / "scripts" / "lrm4d"), "--version"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"lrm4d {lrm4d_core.__version__}"


def test_cli_import_and_help_do_not_import_torch():
    code = (
        "import sys, contextlib, io\n"
        "import lrm4d_core.cli as cli\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert cli.main(['--help']) == 0\n"
        "    assert cli.main(['demo', '--help']) == 0\n"
        "heavy = sorted(m for m in ('torch', 'numpy', 'gsplat', 'rosbags') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = _run([sys.executable, "-c", code])
    assert result.returncode == 0, result.stderr


def test_cli_usage_errors(capsys):
    assert cli.main([]) == 2
    assert cli.main(["no-such-command"]) == 2
    assert cli.main(["demo", "--size", "not-a-number"]) == 2
    assert cli.main(["demo", "--frames", "0"]) == 2
    assert "usage: lrm4d" in capsys.readouterr().err


def test_cli_demo_defaults():
    args = cli.build_parser(only="demo").parse_args(["demo"])
    assert (args.out, args.size, args.frames, args.device) == ("lrm4d_demo_out", 128, 16, "auto")


def test_cli_dispatches_lazily(monkeypatch, capsys, tmp_path):
    calls = []
    fake = types.ModuleType("_lrm4d_fake_target")
    fake.run = lambda args: calls.append(args) or 3
    monkeypatch.setitem(sys.modules, "_lrm4d_fake_target", fake)
    monkeypatch.setitem(cli.SUBCOMMANDS, "fake", cli.Subcommand("fake", "_lrm4d_fake_target:run", lambda p: None))
    assert cli.main(["fake"]) == 3 and calls[0].command == "fake"

    # A subcommand whose module is absent fails with a clear message, not a traceback ...
    monkeypatch.setitem(cli.SUBCOMMANDS, "absent", cli.Subcommand("absent", "lrm4d_core._absent:main", lambda p: None))
    assert cli.main(["absent"]) == 1
    assert "lrm4d absent: not available" in capsys.readouterr().err

    # ... but a dependency missing inside an existing module is reported as the real error.
    (tmp_path / "_lrm4d_broken_target.py").write_text("import _lrm4d_missing_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.SUBCOMMANDS, "broken", cli.Subcommand("broken", "_lrm4d_broken_target:main", lambda p: None))
    with pytest.raises(ModuleNotFoundError, match="_lrm4d_missing_dependency"):
        cli.main(["broken"])


def test_readme_documents_every_node_parameter_and_output_field():
    from dataclasses import fields

    from ros2_lrm4d.convert import GAUSSIAN3D_FIELDS
    from ros2_lrm4d.params import NodeParams

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [f.name for f in fields(NodeParams) if f"| `{f.name}` |" not in readme]
    assert missing == [], f"README parameter table lacks {missing}"
    table = readme[readme.index("PointCloud2 fields"):readme.index("RViz:")]
    documented = {tok for row in table.splitlines() if row.startswith("| `")
                  for tok in row.split("`")[1].split()}
    assert documented == set(GAUSSIAN3D_FIELDS), documented ^ set(GAUSSIAN3D_FIELDS)
