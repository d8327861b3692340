# Writes OUT, a C++ file that embeds the bytes of IN as `extern const unsigned char SYMBOL[]` and
# `extern const unsigned long SYMBOL_size` through the assembler's .incbin (fast for megabytes).
file(SIZE "${IN}" _size)
file(WRITE "${OUT}" "// Generated from ${IN} by tools/cmake/embed_file.cmake. Do not edit.\n"
"__asm__(\".section .rodata\\n\"\n"
"        \".global ${SYMBOL}\\n\"\n"
"        \".balign 16\\n\"\n"
"        \"${SYMBOL}:\\n\"\n"
"        \".incbin \\\"${IN}\\\"\\n\"\n"
"        \".byte 0\\n\"\n"
"        \".previous\\n\");\n"
"extern \"C\" const unsigned long ${SYMBOL}_size = ${_size}UL;\n")
