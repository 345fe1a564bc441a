# What coremap's own libraries (libcoremap, libcoremap-mpi) share in the build and in their
# install rules. Internal to this project: not installed (CoremapPlugin.cmake is the public one).

# coremap_library_properties(TARGET [PROPERTY VALUE ...]): the project's warnings as private
# compile options (not a link to coremap_warnings: a static library's link interface is
# exported, and coremap_warnings is not), the project version as VERSION and MAJOR.MINOR as
# SOVERSION (the ABI), hidden visibility, position-independent code, and the output in
# COREMAP_OUTPUT_LIBDIR; further PROPERTY VALUE pairs (EXPORT_NAME, OUTPUT_NAME) are set too.
function(coremap_library_properties target)
  target_compile_options(${target} PRIVATE $<TARGET_PROPERTY:coremap_warnings,INTERFACE_COMPILE_OPTIONS>)
  set_target_properties(${target} PROPERTIES
    VERSION ${PROJECT_VERSION}
    SOVERSION ${PROJECT_VERSION_MAJOR}.${PROJECT_VERSION_MINOR}
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    POSITION_INDEPENDENT_CODE ON
    LIBRARY_OUTPUT_DIRECTORY ${COREMAP_OUTPUT_LIBDIR}
    ARCHIVE_OUTPUT_DIRECTORY ${COREMAP_OUTPUT_LIBDIR}
    ${ARGN})
endfunction()

# coremap_install_library(TARGETS ... EXPORT SET COMPONENT RUNTIME DEV_COMPONENT DEV): installs
# the libraries into the export set SET, the shared library in the CPack component RUNTIME and
# its link name and static archive in DEV (one Debian package each, cmake/Packaging.cmake).
function(coremap_install_library)
  cmake_parse_arguments(arg "" "EXPORT;COMPONENT;DEV_COMPONENT" "TARGETS" ${ARGN})
  install(TARGETS ${arg_TARGETS} EXPORT ${arg_EXPORT}
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT ${arg_COMPONENT} NAMELINK_COMPONENT ${arg_DEV_COMPONENT}
    ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT ${arg_DEV_COMPONENT}
    INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
endfunction()
