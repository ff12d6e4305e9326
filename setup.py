"""Only what pyproject.toml cannot say: the speed and check scripts in benchmarks/ are development
tools run from a checkout (`python benchmarks/NAME.py`), not part of the installed package."""

import re

from setuptools import setup
from setuptools.command.build_py import build_py

DEVELOPMENT_SCRIPT = re.compile(r"_(bench|check|speed|inventory|anchor)$")


class BuildWithoutDevelopmentScripts(build_py):
    def find_package_modules(self, package, package_dir):
        modules = super().find_package_modules(package, package_dir)
        if package != "pocketml.benchmarks":
            return modules
        return [m for m in modules if not DEVELOPMENT_SCRIPT.search(m[1])]


setup(cmdclass={"build_py": BuildWithoutDevelopmentScripts})
