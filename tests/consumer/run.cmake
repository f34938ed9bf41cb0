# Installs the built Kiln into a scratch prefix, checks what landed there (the public headers only,
# under include/kiln/; an installed `kiln` that starts), then configures, builds and runs an outside
# project that uses it through find_package(kiln) and #include <kiln/kiln.h> alone.
file(REMOVE_RECURSE ${WORK_DIR})
set(prefix ${WORK_DIR}/prefix)
execute_process(COMMAND ${CMAKE_COMMAND} --install ${KILN_BUILD_DIR} --prefix ${prefix}
                RESULT_VARIABLE rc OUTPUT_QUIET)
if(rc)
  message(FATAL_ERROR "cmake --install failed (${rc})")
endif()

# The headers: the umbrella at include/kiln/kiln.h, every other header below include/kiln/, and
# none that is internal (kernels, oneDNN or CUDA glue) or that needs a header the user lacks.
if(NOT EXISTS ${prefix}/include/kiln/kiln.h)
  message(FATAL_ERROR "the install has no include/kiln/kiln.h")
endif()
file(GLOB top_level RELATIVE ${prefix}/include ${prefix}/include/*)
if(NOT top_level STREQUAL "kiln")
  message(FATAL_ERROR "the install puts more than kiln/ in include/: ${top_level}")
endif()
file(GLOB_RECURSE headers RELATIVE ${prefix}/include/kiln ${prefix}/include/kiln/*)
list(LENGTH headers count)
foreach(header IN LISTS headers)
  if(header MATCHES "^(kiln|kernels)/|onednn|dispatch\\.h$|op_list\\.h$")
    message(FATAL_ERROR "an internal header was installed: include/kiln/${header}")
  endif()
  file(STRINGS ${prefix}/include/kiln/${header} foreign REGEX "#[ \t]*include[ \t]*[<\"](dnnl|oneapi/|cuda|omp\\.h)")
  if(foreign)
    message(FATAL_ERROR "include/kiln/${header} needs a header the user may not have: ${foreign}")
  endif()
endforeach()
message(STATUS "installed ${count} public headers")

# The installed tool runs from the prefix, finding libkiln through its relative run path.
execute_process(COMMAND ${prefix}/bin/kiln --help OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc)
if(rc OR NOT out MATCHES "usage: kiln")
  message(FATAL_ERROR "the installed kiln did not start (${rc}): ${out}${err}")
endif()

execute_process(COMMAND ${CMAKE_COMMAND} -S ${KILN_SOURCE_DIR}/tests/consumer -B ${WORK_DIR}/build
                        -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_BUILD_TYPE=Release
                RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "configuring the consumer failed (${rc})")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${WORK_DIR}/build RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "building the consumer failed (${rc})")
endif()
execute_process(COMMAND ${WORK_DIR}/build/consumer OUTPUT_VARIABLE out RESULT_VARIABLE rc)
message(STATUS "consumer printed: ${out}")
if(rc OR NOT out MATCHES "sum=10")
  message(FATAL_ERROR "the consumer failed (${rc}): ${out}")
endif()
