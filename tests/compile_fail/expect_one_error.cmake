# cmake -DBUILD_DIR=... -DTARGET=... -DEXPECTED=... -P expect_one_error.cmake
# Builds TARGET and passes if the build fails with exactly one compiler error, which holds EXPECTED.
execute_process(
  COMMAND ${CMAKE_COMMAND} --build ${BUILD_DIR} --target ${TARGET}
  RESULT_VARIABLE rc
  OUTPUT_VARIABLE out
  ERROR_VARIABLE out)
if(rc EQUAL 0)
  message(FATAL_ERROR "${TARGET} compiled; it must not")
endif()
# Counted by the token alone: an error's text may hold ';', which would split a CMake list.
string(REGEX MATCHALL "error:" errors "${out}")
list(LENGTH errors count)
string(FIND "${out}" "${EXPECTED}" at)
if(NOT count EQUAL 1 OR at EQUAL -1)
  message(FATAL_ERROR "${TARGET}: expected one error saying \"${EXPECTED}\"; got ${count}:\n${out}")
endif()
message(STATUS "${TARGET} fails as it should, with one error saying \"${EXPECTED}\"")
