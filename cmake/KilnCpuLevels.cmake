# kernels/cpu, built once per CPU capability level into the kiln library (Note [CPU capability
# levels] in tensor/cpu_capability.h). KILN_CPU_LEVELS lists the levels in order; the index of a
# level is the CpuCapability its kernels register with.
set(KILN_CPU_LEVELS baseline avx2 avx512)
set(KILN_CPU_FLAGS_baseline "")
set(KILN_CPU_FLAGS_avx2 -march=x86-64-v3)
set(KILN_CPU_FLAGS_avx512 -march=x86-64-v4)
if(KILN_NATIVE)  # one copy for the build machine (kiln_set_warnings adds -march=native)
  set(KILN_CPU_LEVELS native)
  set(KILN_CPU_FLAGS_native "")
endif()

# Adds each level's objects to target. Objects go after target's own, and lower levels before
# higher, because the linker keeps the first copy of an inline function that several objects
# define: a copy compiled for a higher level must never be the one plain code calls.
function(kiln_add_cpu_kernels target)
  file(GLOB sources CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/kernels/cpu/*.cpp)
  # Note [Vectorised updates] in optimizer_update.cpp: std::sqrt has a SIMD form only without errno.
  set_source_files_properties(${PROJECT_SOURCE_DIR}/kernels/cpu/optimizer_update.cpp PROPERTIES
                              COMPILE_OPTIONS -fno-math-errno)
  set(index 0)
  foreach(level IN LISTS KILN_CPU_LEVELS)
    set(objects ${target}_cpu_${level})
    add_library(${objects} OBJECT ${sources})
    target_compile_definitions(${objects} PRIVATE KILN_CPU_LEVEL=${index} KILN_CPU_NS=${level})
    # -Wno-psabi: GCC notes that passing a 64-byte vector by value changes the calling convention
    # without AVX-512. Kernels' vector helpers are internal to one level's namespace, so no call
    # ever crosses objects built with different flags.
    target_compile_options(${objects} PRIVATE ${KILN_CPU_FLAGS_${level}} -Wno-psabi
                           -fno-semantic-interposition -ftls-model=initial-exec)
    target_include_directories(${objects} PRIVATE ${PROJECT_SOURCE_DIR} ${PROJECT_SOURCE_DIR}/include)
    target_link_libraries(${objects} PRIVATE nlohmann_json::nlohmann_json OpenMP::OpenMP_CXX DNNL::dnnl)
    set_target_properties(${objects} PROPERTIES POSITION_INDEPENDENT_CODE ON)
    kiln_set_warnings(${objects})
    target_sources(${target} PRIVATE $<TARGET_OBJECTS:${objects}>)
    math(EXPR index "${index} + 1")
  endforeach()
  if(KILN_NATIVE)
    target_compile_definitions(${target} PRIVATE KILN_CPU_NATIVE=1)
  endif()
endfunction()

# The levels below this machine's best that it can also run, for the tests to run at (read from
# /proc/cpuinfo at configure time: CI builds and tests on one machine). Empty for native builds.
function(kiln_lower_cpu_levels out)
  set(levels "")
  if(NOT KILN_NATIVE AND EXISTS /proc/cpuinfo)
    file(READ /proc/cpuinfo cpuinfo)
    string(REGEX MATCH "\nflags[^\n]*" flags "${cpuinfo}")
    string(APPEND flags " ")
    set(v3 ON)
    foreach(f avx2 fma bmi1 bmi2 abm movbe f16c)
      if(NOT flags MATCHES " ${f} ")
        set(v3 OFF)
      endif()
    endforeach()
    set(v4 ${v3})
    foreach(f avx512f avx512bw avx512cd avx512dq avx512vl)
      if(NOT flags MATCHES " ${f} ")
        set(v4 OFF)
      endif()
    endforeach()
    if(v3)
      list(APPEND levels baseline)
    endif()
    if(v4)
      list(APPEND levels avx2)
    endif()
  endif()
  set(${out} ${levels} PARENT_SCOPE)
endfunction()
