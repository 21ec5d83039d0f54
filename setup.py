"""pip packaging of lrm4d_core (the ROS-free core) and ros2_lrm4d (the ROS shells).

Inside a ROS 2 workspace the package is built by ament_cmake from CMakeLists.txt instead; this file
is for plain Python installs: `pip install torch==2.13.0 && pip install -e '.[dev]'`.
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent


def read_version() -> str:
    """lrm4d_core.__version__, read without importing the package."""
    text = (HERE / "lrm4d_core" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', text, re.MULTILINE)
    if match is None:
        raise RuntimeError("__version__ not found in lrm4d_core/__init__.py")
    return match.group(1)


setup(
    name="lrm4d",
    version=read_version(),
    description="Dynamic scene reconstruction as 4D Gaussians with a 4D-LRM transformer, with ROS 2 shells",
    long_description=(HERE / "README.md").read_text(encoding="utf-8") if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    author="lrm4d maintainers",
    author_email="maintainers@lrm4d.dev",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["lrm4d_core", "lrm4d_core.*", "ros2_lrm4d", "ros2_lrm4d.*"]),
    # A copy of msg/GaussianCloud4D.msg (tests check they are identical), so that code running
    # outside ROS can register the message with rosbags.
    package_data={"ros2_lrm4d": ["msg_defs/*.msg"]},
    install_requires=[
        # Install torch first (README): `pip install torch==2.13.0` picks the CPU or CUDA build you
        # want, and then this range installs nothing more.
        "torch>=2.1",
        "numpy",
        "safetensors",
        "tqdm",
        "rosbags",
        "rosbags-image[opencv-headless]",
        "mcap-ros2-support",
        "pytransform3d",
        "pillow",
        "scikit-image",
        "pyyaml",  # node parameter files (ros2_lrm4d.params), training configs
    ],
    extras_require={
        "dev": ["pytest", "pytest-timeout", "catkin_pkg", "gsplat", "plyfile"],
    },
    entry_points={"console_scripts": ["lrm4d = lrm4d_core.cli:main"]},
)
