# `cpack -G DEB` in the build directory makes coremap_<version>_<arch>.deb: the CLI, libcoremap,
# the bundled plugins, the headers and the CMake/pkg-config package, installed under /usr, and,
# in a build with MPI, libcoremap-mpi with its header and CMake targets (install component
# `mpi`, ready for a package of its own).
set(CPACK_PACKAGE_NAME coremap)
set(CPACK_PACKAGE_VENDOR "coremap developers")
set(CPACK_PACKAGE_CONTACT "coremap developers <coremap@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "${PROJECT_DESCRIPTION}")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_GENERATOR DEB)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION devel)
# Runtime dependencies come from the binaries' own links (dpkg-shlibdeps: libtbb12, libssl3,
# libelf1 for the plugin loader, ...); the headers need
# nlohmann_json, so the package depends on its -dev package too.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "nlohmann-json3-dev (>= 3.10)")
include(CPack)
