# Warning flags for the project's own tests, examples and benchmarks (never pushed onto consumers).
include_guard(GLOBAL)

function(flashmemory_strict target)
  target_compile_options(${target} PRIVATE
    "$<$<COMPILE_LANGUAGE:CXX>:-Wall;-Wextra;-Wpedantic;-Wno-pedantic;-Wno-missing-field-initializers;-Werror=return-type>"
    "$<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra>")
endfunction()
