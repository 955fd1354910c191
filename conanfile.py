"""Conan 2 recipe for dtx (header-only), built on dtx's own CMake install.

    conan create . -o "dtx/*:sqlite=True" --test-folder=packaging/conan/test_package

Options switch the parts with dependencies of their own; each part is a component with the
target name of dtx's CMake package (dtx::dtx, dtx::http, dtx::tls, dtx::sqlite, dtx::postgres).
"""

import os
import re

from conan import ConanFile
from conan.tools.build import check_min_cppstd
from conan.tools.cmake import CMake, CMakeDeps, CMakeToolchain, cmake_layout
from conan.tools.files import copy, load, rmdir

required_conan_version = ">=2.0"


class DtxConan(ConanFile):
    name = "dtx"
    license = "BSL-1.0"
    description = "Distributed transactions (TCC and sagas) for C++ services, as Boost.Asio coroutines"
    topics = ("distributed-transactions", "tcc", "saga", "asio", "coroutines", "header-only")
    package_type = "header-library"
    settings = "os", "arch", "compiler", "build_type"
    options = {
        "http": [True, False],  # dtx::http: Boost.Beast, nothing to link
        "tls": [True, False],  # dtx::tls: HTTPS with OpenSSL (implies http)
        "sqlite": [True, False],  # dtx::sqlite: SQLite journal and barrier
        "postgres": [True, False],  # dtx::postgres: PostgreSQL journal and barrier (libpq)
    }
    default_options = {"http": True, "tls": False, "sqlite": True, "postgres": False}
    exports_sources = "CMakeLists.txt", "cmake/*", "include/*", "LICENSE*"
    no_copy_source = True

    def set_version(self):
        # The version has one home, include/dtx/version.hpp.
        text = load(self, os.path.join(self.recipe_folder, "include", "dtx", "version.hpp"))
        self.version = re.search(r'#define DTX_VERSION "([^"]+)"', text).group(1)

    def configure(self):
        if self.options.tls:
            self.options.http = True

    def layout(self):
        cmake_layout(self)

    def requirements(self):
        # The headers include these, so a consumer compiles against them too.
        self.requires("boost/[>=1.81 <2]", transitive_headers=True)
        self.requires("nlohmann_json/[>=3.11 <4]", transitive_headers=True)
        if self.options.tls:
            self.requires("openssl/[>=3 <4]", transitive_headers=True)
        if self.options.sqlite:
            self.requires("sqlite3/[>=3.35 <4]", transitive_headers=True)
        if self.options.postgres:
            self.requires("libpq/[>=14 <18]", transitive_headers=True)

    def validate(self):
        check_min_cppstd(self, 20)

    def package_id(self):
        self.info.settings.clear()  # the same headers for every configuration; options stay

    def generate(self):
        tc = CMakeToolchain(self)
        tc.cache_variables["DTX_BUILD_TESTS"] = False
        tc.cache_variables["DTX_BUILD_EXAMPLES"] = False
        tc.cache_variables["DTX_BUILD_BENCH"] = False
        tc.cache_variables["DTX_INSTALL"] = True
        for option, variable in (("tls", "DTX_TLS"), ("sqlite", "DTX_SQLITE"),
                                 ("postgres", "DTX_POSTGRES")):
            tc.cache_variables[variable] = "ON" if self.options.get_safe(option) else "OFF"
        tc.generate()
        CMakeDeps(self).generate()

    def build(self):
        pass  # nothing to compile

    def package(self):
        cmake = CMake(self)
        cmake.configure()
        cmake.install()
        # Conan writes the consumers' CMake and pkg-config files from package_info() (same
        # names as dtx's own); dtx's would look for the dependencies outside Conan.
        rmdir(self, os.path.join(self.package_folder, "share"))
        copy(self, "LICENSE", self.source_folder, os.path.join(self.package_folder, "licenses"))

    def package_info(self):
        self.cpp_info.bindirs = []
        self.cpp_info.libdirs = []
        self.cpp_info.set_property("cmake_file_name", "dtx")
        self.cpp_info.set_property("pkg_config_name", "dtx-all")

        def part(name, target, requires, pkg_config):
            c = self.cpp_info.components[name]
            c.set_property("cmake_target_name", target)
            c.set_property("pkg_config_name", pkg_config)
            c.bindirs = []
            c.libdirs = []
            c.requires = requires
            return c

        core = part("core", "dtx::dtx", ["boost::headers", "nlohmann_json::nlohmann_json"], "dtx")
        if self.settings.os in ("Linux", "FreeBSD"):
            core.system_libs = ["pthread"]
        if self.options.http:
            part("http", "dtx::http", ["core"], "dtx-http")
        if self.options.tls:
            part("tls", "dtx::tls", ["http", "openssl::ssl", "openssl::crypto"], "dtx-tls")
        if self.options.sqlite:
            part("sqlite", "dtx::sqlite", ["core", "sqlite3::sqlite3"], "dtx-sqlite")
        if self.options.postgres:
            part("postgres", "dtx::postgres", ["core", "libpq::libpq"], "dtx-postgres")
