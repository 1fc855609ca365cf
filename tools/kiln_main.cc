// The `kiln` command line: wires the pipeline libraries into subcommands.
#include <cstdio>
int main() { std::puts("kiln " KILN_VERSION); return 0; }
