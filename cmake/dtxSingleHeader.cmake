# dtx_single_header_shims(<out-var>): writes one forwarding header per header of
# include/ into the build tree (scripts/amalgamate.py --shims): each defines the
# macro of the part its header belongs to and includes single_include/dtx/dtx.hpp.
# Code written against include/ then compiles unchanged against the single header.
# Sets <out-var> to the directory to put on the include path.
function(dtx_single_header_shims out_var)
  find_package(Python3 REQUIRED COMPONENTS Interpreter)
  set(dir "${PROJECT_BINARY_DIR}/single_header_shims")
  file(REMOVE_RECURSE "${dir}")
  execute_process(
    COMMAND "${Python3_EXECUTABLE}" "${PROJECT_SOURCE_DIR}/scripts/amalgamate.py" --shims "${dir}"
    RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "scripts/amalgamate.py --shims failed (exit ${rc})")
  endif()
  # A header added to include/ needs its forwarding header: configure again then.
  file(GLOB_RECURSE headers CONFIGURE_DEPENDS "${PROJECT_SOURCE_DIR}/include/dtx/*.hpp")
  set(${out_var} "${dir}" PARENT_SCOPE)
endfunction()
