// NVRTC driver (see nvrtc_compiler.h). The program gets the embedded kernels/*.cuh as named
// headers, so no include directory is needed on the compiling machine.
#include "codegen/nvrtc_compiler.h"

#include <regex>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "codegen/cubin_info.h"
#include "codegen/kernel_sources.h"

#ifdef KILN_HAVE_NVRTC
#include <nvrtc.h>
#endif

namespace kiln {
namespace {

std::atomic<int64_t> g_compiles{0};

// "k.cu(42): error: ..." -> 42, or 0.
int first_error_line(const std::string& log) {
  std::smatch m;
  static const std::regex re(R"(\((\d+)\): (catastrophic )?error)");
  if (std::regex_search(log, m, re)) return std::stoi(m[1]);
  return 0;
}

std::string source_excerpt(const std::string& source, int line, int context) {
  std::istringstream in(source);
  std::string text, out;
  for (int n = 1; std::getline(in, text); ++n) {
    if (n >= line - context && n <= line + context) {
      absl::StrAppend(&out, n == line ? ">> " : "   ", n, " | ", text, "\n");
    }
  }
  return out;
}

}  // namespace

const std::vector<std::string>& accepted_archs() {
  static const std::vector<std::string> archs = {"sm_90a", "sm_89", "sm_80"};
  return archs;
}

absl::Status check_arch(const std::string& arch) {
  for (const std::string& a : accepted_archs()) {
    if (a == arch) return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unsupported target arch \"", arch, "\"; accepted: ", absl::StrJoin(accepted_archs(), ", ")));
}

void parse_ptxas_info(const std::string& log, CompiledKernel& k) {
  std::smatch m;
  static const std::regex regs(R"(Used (\d+) registers)");
  static const std::regex smem(R"((\d+) bytes smem)");
  static const std::regex stack(R"((\d+) bytes stack frame, (\d+) bytes spill stores)");
  if (std::regex_search(log, m, regs)) k.registers = std::stoi(m[1]);
  if (std::regex_search(log, m, smem)) k.shared_bytes = std::stoi(m[1]);
  if (std::regex_search(log, m, stack)) {
    k.stack_bytes = std::stoi(m[1]);
    k.spill_bytes = std::stoi(m[2]);
  }
}

std::vector<std::string> nvrtc_flags(const std::string& arch) {
  // -Xptxas -v makes ptxas report registers and shared memory in the program log.
  return {"--gpu-architecture=" + arch, "-std=c++17", "-default-device", "-Xptxas", "-v"};
}

int64_t nvrtc_compile_count() { return g_compiles.load(); }

#ifdef KILN_HAVE_NVRTC

bool nvrtc_available() { return true; }

std::string nvrtc_version() {
  int major = 0, minor = 0;
  if (nvrtcVersion(&major, &minor) != NVRTC_SUCCESS) return "unknown";
  return absl::StrCat(major, ".", minor);
}

absl::StatusOr<CompiledKernel> nvrtc_compile(const std::string& name, const std::string& source,
                                             const std::string& arch) {
  if (absl::Status s = check_arch(arch); !s.ok()) return s;
  ++g_compiles;
  std::vector<const char*> header_text, header_names;
  for (const EmbeddedKernelFile& f : embedded_kernel_files()) {
    header_text.push_back(f.text.data());
    header_names.push_back(f.name.data());
  }
  nvrtcProgram prog;
  const std::string file = name + ".cu";
  if (nvrtcResult r = nvrtcCreateProgram(&prog, source.c_str(), file.c_str(),
                                         static_cast<int>(header_text.size()), header_text.data(),
                                         header_names.data());
      r != NVRTC_SUCCESS) {
    return absl::InternalError(
        absl::StrCat(name, ": nvrtcCreateProgram: ", nvrtcGetErrorString(r)));
  }
  std::vector<std::string> flags = nvrtc_flags(arch);
  std::vector<const char*> argv;
  for (const std::string& f : flags) argv.push_back(f.c_str());
  nvrtcResult result = nvrtcCompileProgram(prog, static_cast<int>(argv.size()), argv.data());
  CompiledKernel k;
  k.name = name;
  size_t n = 0;
  nvrtcGetProgramLogSize(prog, &n);
  if (n > 1) {
    k.log.resize(n);
    nvrtcGetProgramLog(prog, k.log.data());
    k.log.resize(n - 1);
  }
  if (result != NVRTC_SUCCESS) {
    nvrtcDestroyProgram(&prog);
    const int line = first_error_line(k.log);
    std::string msg = absl::StrCat("kernel ", name, " failed to compile for ", arch, ":\n", k.log);
    if (line > 0)
      absl::StrAppend(&msg, "\ngenerated source around line ", line, ":\n",
                      source_excerpt(source, line, 4));
    return absl::InvalidArgumentError(msg);
  }
  n = 0;
  nvrtcGetCUBINSize(prog, &n);
  k.cubin.resize(n);
  if (n > 0) nvrtcGetCUBIN(prog, k.cubin.data());
  n = 0;
  nvrtcGetPTXSize(prog, &n);
  k.ptx.resize(n);
  if (n > 0) {
    nvrtcGetPTX(prog, k.ptx.data());
    k.ptx.resize(n - 1);  // drop the terminating NUL
  }
  nvrtcDestroyProgram(&prog);
  parse_ptxas_info(k.log, k);  // spill counts come only from the log
  if (absl::StatusOr<CubinInfo> info = read_cubin_info(k.cubin, name); info.ok()) {
    k.registers = info->registers;
    k.shared_bytes = info->shared_bytes;
    k.stack_bytes = info->frame_bytes;
  }
  return k;
}

#else  // !KILN_HAVE_NVRTC

bool nvrtc_available() { return false; }
std::string nvrtc_version() { return "unavailable"; }

absl::StatusOr<CompiledKernel> nvrtc_compile(const std::string& name, const std::string& source,
                                             const std::string& arch) {
  return absl::FailedPreconditionError(
      "NVRTC is not available: this kiln was built without the CUDA toolkit (install it and "
      "re-run cmake so find_package(CUDAToolkit) finds CUDA::nvrtc)");
}

#endif

}  // namespace kiln
