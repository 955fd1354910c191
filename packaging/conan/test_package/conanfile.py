"""Test package for `conan create . --test-folder=packaging/conan/test_package`: builds and runs
the consumer program of tests/consumer (a TCC transaction; with the SQLite journal when dtx was
created with sqlite=True)."""

import os

from conan import ConanFile
from conan.tools.build import can_run
from conan.tools.cmake import CMake, cmake_layout


class DtxTestPackage(ConanFile):
    settings = "os", "arch", "compiler", "build_type"
    generators = "CMakeDeps", "CMakeToolchain"

    def requirements(self):
        self.requires(self.tested_reference_str)

    def layout(self):
        cmake_layout(self)

    def build(self):
        cmake = CMake(self)
        sqlite = bool(self.dependencies["dtx"].options.sqlite)
        cmake.configure(variables={"DTX_CONSUMER_SQLITE": "ON" if sqlite else "OFF"})
        cmake.build()

    def test(self):
        if can_run(self):
            self.run(os.path.join(self.cpp.build.bindir, "consumer"), env="conanrun")
