# `cpack -G DEB` in a build directory makes the Debian packages, split as Debian splits a library
# (one install component each, CPACK_DEB_COMPONENT_INSTALL):
#   libcoremap<soversion>  (component lib)     libcoremap.so.<soversion>, and the --isolate worker
#                                              (<libdir>/coremap/coremap-worker: EngineOptions::isolate
#                                              is library API, the library runs it)
#   libcoremap-dev         (component dev)     headers, libcoremap.so, CMake package, coremap.pc
#   coremap                (component cli)     /usr/bin/coremap, logstats, the bundled plugins
#   libcoremap-mpi<soversion> (component mpi)  libcoremap-mpi.so.<soversion> (built with MPI only)
#   libcoremap-mpi-dev     (component mpi_dev) coremap/mpi.hpp, libcoremap-mpi.so, its CMake targets
#   python3-coremap        (component python)  the Python package coremap and the python plugin
#                                              (built with python3-dev and pybind11-dev only)
# Only the MPI packages depend on Open MPI, only coremap on zlib (logstats). Configure with
# -DCMAKE_INSTALL_PREFIX=/usr so that GNUInstallDirs gives the multiarch library directory
# (lib/x86_64-linux-gnu); scripts/check-deb.sh does.
set(CPACK_PACKAGE_NAME coremap)
set(CPACK_PACKAGE_VENDOR "coremap developers")
set(CPACK_PACKAGE_CONTACT "coremap developers <coremap@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "${PROJECT_DESCRIPTION}")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGING_INSTALL_PREFIX ${CMAKE_INSTALL_PREFIX})
set(CPACK_GENERATOR DEB)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION libs)
if(NOT CMAKE_INSTALL_LIBDIR MATCHES "^lib/.+-linux-gnu")
  message(STATUS "coremap packages: library directory '${CMAKE_INSTALL_LIBDIR}' is not multiarch "
                 "(configure with -DCMAKE_INSTALL_PREFIX=/usr for lib/<triplet>)")
endif()

set(COREMAP_SOVERSION ${PROJECT_VERSION_MAJOR}.${PROJECT_VERSION_MINOR})
set(COREMAP_DEB_VERSION ${PROJECT_VERSION})
set(CPACK_COMPONENTS_ALL lib dev cli)
if(TARGET coremap_mpi)
  list(APPEND CPACK_COMPONENTS_ALL mpi mpi_dev)
endif()
if(TARGET coremap_python)
  list(APPEND CPACK_COMPONENTS_ALL python)
endif()

# Dependencies on other distributions' libraries come from the binaries' own links
# (dpkg-shlibdeps: libtbb12, libssl3, libelf1, libopenmpi3, zlib1g ...), per package. Between
# coremap's own packages they are explicit and exact: the plugin ABI and the C++ ABI of the
# headers change with the version. dpkg-shlibdeps finds coremap's own libraries in the build
# tree (they are in no installed package yet) and leaves them to these explicit dependencies.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS_PRIVATE_DIRS ${COREMAP_OUTPUT_LIBDIR})
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS_POLICY "=")

set(CPACK_DEBIAN_LIB_PACKAGE_NAME libcoremap${COREMAP_SOVERSION})
set(CPACK_COMPONENT_LIB_DESCRIPTION "coremap run-time library\n libcoremap maps a C++ plugin over a manifest on every core (oneTBB), and the\n worker process that runs plugins with isolation.")

set(CPACK_DEBIAN_DEV_PACKAGE_NAME libcoremap-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
# The headers include nlohmann/json.hpp; the CMake package finds nlohmann_json.
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS "libcoremap${COREMAP_SOVERSION} (= ${COREMAP_DEB_VERSION}), nlohmann-json3-dev (>= 3.10)")
set(CPACK_COMPONENT_DEV_DESCRIPTION "coremap development files\n Headers, the CMake package (find_package(coremap), coremap_add_plugin) and\n pkg-config file for building coremap plugins and applications.")

set(CPACK_DEBIAN_CLI_PACKAGE_NAME coremap)
set(CPACK_DEBIAN_CLI_PACKAGE_SECTION utils)
set(CPACK_DEBIAN_CLI_PACKAGE_DEPENDS "libcoremap${COREMAP_SOVERSION} (= ${COREMAP_DEB_VERSION})")
set(CPACK_COMPONENT_CLI_DESCRIPTION "coremap command-line tool and bundled plugins\n coremap run/bench/info/plugins/new-plugin, logstats, and the plugins echo, exec,\n sha256, wordcount and others.")

if(TARGET coremap_mpi)
  set(CPACK_DEBIAN_MPI_PACKAGE_NAME libcoremap-mpi${COREMAP_SOVERSION})
  set(CPACK_DEBIAN_MPI_PACKAGE_DEPENDS "libcoremap${COREMAP_SOVERSION} (= ${COREMAP_DEB_VERSION})")
  set(CPACK_COMPONENT_MPI_DESCRIPTION "coremap across MPI ranks (run-time library)\n libcoremap-mpi runs a coremap plugin over a manifest across the ranks of an MPI job.")
  set(CPACK_DEBIAN_MPI_DEV_PACKAGE_NAME libcoremap-mpi-dev)
  set(CPACK_DEBIAN_MPI_DEV_PACKAGE_SECTION libdevel)
  set(CPACK_DEBIAN_MPI_DEV_PACKAGE_DEPENDS
    "libcoremap-mpi${COREMAP_SOVERSION} (= ${COREMAP_DEB_VERSION}), libcoremap-dev (= ${COREMAP_DEB_VERSION}), mpi-default-dev")
  set(CPACK_COMPONENT_MPI_DEV_DESCRIPTION "coremap across MPI ranks (development files)\n coremap/mpi.hpp and the CMake component mpi: find_package(coremap COMPONENTS mpi).")
  # The CLI runs across MPI ranks through libcoremap-mpi (found by dpkg-shlibdeps' private dirs,
  # so named here).
  string(APPEND CPACK_DEBIAN_CLI_PACKAGE_DEPENDS ", libcoremap-mpi${COREMAP_SOVERSION} (= ${COREMAP_DEB_VERSION})")
endif()
if(TARGET coremap_python)
  # The extension module is built for this Python's ABI (cpython-3XY); the python plugin links
  # its libpython (dpkg-shlibdeps adds libpython3.X).
  set(CPACK_DEBIAN_PYTHON_PACKAGE_NAME python3-coremap)
  set(CPACK_DEBIAN_PYTHON_PACKAGE_SECTION python)
  math(EXPR coremap_python_next_minor "${Python3_VERSION_MINOR} + 1")
  set(CPACK_DEBIAN_PYTHON_PACKAGE_DEPENDS
    "libcoremap${COREMAP_SOVERSION} (= ${COREMAP_DEB_VERSION}), python3 (>= ${Python3_VERSION_MAJOR}.${Python3_VERSION_MINOR}), python3 (<< ${Python3_VERSION_MAJOR}.${coremap_python_next_minor})")
  set(CPACK_COMPONENT_PYTHON_DESCRIPTION "coremap for Python\n The Python package coremap (multiprocessing.Pool's API with crash isolation,\n timeouts, retries and resume; coremap plugins run in process with the GIL released)\n and the python plugin, which runs a Python function per item.")
endif()
include(CPack)
