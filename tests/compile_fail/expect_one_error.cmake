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
string(REGEX MATCHALL "[^\n]*error:[^\n]*" errors "${out}")
list(LENGTH errors count)
string(FIND "${out}" "${EXPECTED}" at)
if(NOT count EQUAL 1 OR at EQUAL -1)
  message(FATAL_ERROR "${TARGET}: expected one error saying \"${EXPECTED}\"; got ${count}:\n${out}")
endif()
list(GET errors 0 error)
message(STATUS "${TARGET} fails as it should:\n${error}")
