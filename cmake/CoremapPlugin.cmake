# coremap_add_plugin(<name> SOURCES <src>... [LINK_LIBRARIES <lib>...] [OUTPUT_DIRECTORY <dir>] [NO_INSTALL])
#
# Builds <name>.so, a coremap plugin: a MODULE library with no "lib" prefix, hidden
# visibility (only the symbols emitted by COREMAP_PLUGIN are exported), compiled against
# the plugin header. Used the same way by plugins/ in this tree and by projects outside it.
function(coremap_add_plugin name)
  cmake_parse_arguments(PARSE_ARGV 1 arg "NO_INSTALL" "OUTPUT_DIRECTORY" "SOURCES;LINK_LIBRARIES")
  if(NOT arg_SOURCES)
    message(FATAL_ERROR "coremap_add_plugin(${name}): SOURCES is required")
  endif()
  add_library(${name} MODULE ${arg_SOURCES})
  if(TARGET coremap::plugin_api)
    target_link_libraries(${name} PRIVATE coremap::plugin_api ${arg_LINK_LIBRARIES})
  else()
    target_link_libraries(${name} PRIVATE coremap_plugin_api ${arg_LINK_LIBRARIES})
  endif()
  set_target_properties(${name} PROPERTIES
    PREFIX ""
    OUTPUT_NAME ${name}
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON)
  if(arg_OUTPUT_DIRECTORY)
    set_target_properties(${name} PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${arg_OUTPUT_DIRECTORY})
  elseif(DEFINED COREMAP_OUTPUT_PLUGINDIR)
    set_target_properties(${name} PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${COREMAP_OUTPUT_PLUGINDIR})
  endif()
  # Inside coremap's own tree, COREMAP_INSTALL=OFF (the default under add_subdirectory) skips it.
  if(NOT arg_NO_INSTALL AND DEFINED COREMAP_PLUGIN_INSTALL_DIR AND NOT (DEFINED COREMAP_INSTALL AND NOT COREMAP_INSTALL))
    install(TARGETS ${name} LIBRARY DESTINATION ${COREMAP_PLUGIN_INSTALL_DIR})
  endif()
endfunction()
