# cmake --install: the library, its public headers and a package config, so that find_package(kiln)
# gives kiln::kiln and `#include <kiln/kiln.h>` works. Note [Installed header layout] says why the
# headers land where they do.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# Note [Installed header layout]: Kiln's headers include each other by repo-root paths
# ("tensor/tensor.h"). Installed, the umbrella is include/kiln/kiln.h and the headers it reaches
# keep their repo paths under include/kiln/ (include/kiln/tensor/tensor.h), so the consumer's
# include path holds include/ (for <kiln/kiln.h>) and include/kiln/ (for those inner includes);
# no Kiln folder lands directly in include/. Only the headers kiln.h reaches are installed: the
# kernels, oneDNN and CUDA glue and other internals stay out, so the install needs no header the
# user lacks. The set is walked at install time from kiln.h's quoted includes, so it follows the
# headers without a reconfigure; tests/consumer/run.cmake checks the result.
target_include_directories(kiln INTERFACE $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>
                                          $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}/kiln>)

install(TARGETS kiln EXPORT kilnTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(CODE "set(KILN_SOURCE_DIR \"${PROJECT_SOURCE_DIR}\")
              set(KILN_HEADER_DESTINATION \"${CMAKE_INSTALL_INCLUDEDIR}/kiln\")")
install(CODE [[
  set(pending include/kiln/kiln.h)
  set(seen "")
  while(pending)
    list(POP_FRONT pending header)
    list(FIND seen ${header} index)  # not IN_LIST: install scripts run without the project's policies
    if(index GREATER -1)
      continue()
    endif()
    list(APPEND seen ${header})
    file(STRINGS ${KILN_SOURCE_DIR}/${header} lines REGEX "^[ \t]*#[ \t]*include[ \t]*\"")
    foreach(line IN LISTS lines)
      string(REGEX REPLACE "^[ \t]*#[ \t]*include[ \t]*\"([^\"]+)\".*" "\\1" included "${line}")
      if(NOT EXISTS ${KILN_SOURCE_DIR}/${included})
        message(FATAL_ERROR "${header} includes \"${included}\", which is not a path from Kiln's source root")
      endif()
      list(APPEND pending ${included})
    endforeach()
  endwhile()
  foreach(header IN LISTS seen)
    if(header STREQUAL "include/kiln/kiln.h")
      set(folder "")
    else()
      get_filename_component(folder ${header} DIRECTORY)
    endif()
    file(INSTALL ${KILN_SOURCE_DIR}/${header} DESTINATION ${CMAKE_INSTALL_PREFIX}/${KILN_HEADER_DESTINATION}/${folder})
  endforeach()
]])
install(EXPORT kilnTargets NAMESPACE kiln:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/kiln)
configure_package_config_file(cmake/kilnConfig.cmake.in ${CMAKE_CURRENT_BINARY_DIR}/kilnConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/kiln)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/kilnConfigVersion.cmake COMPATIBILITY SameMajorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/kilnConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/kilnConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/kiln)

# Installed executables find libkiln from any prefix: the run path is relative to the executable.
file(RELATIVE_PATH KILN_BIN_TO_LIB ${CMAKE_INSTALL_FULL_BINDIR} ${CMAKE_INSTALL_FULL_LIBDIR})
set(KILN_INSTALL_RPATH "$ORIGIN/${KILN_BIN_TO_LIB}")
