// The dlopen'd CUDA driver API (see driver.h). cuda.h is used for its types only: nothing
// here links against libcuda, and without cuda.h (no toolkit at build time) open_gpu() reports
// Unavailable.
#include "runtime/cuda/driver.h"

#include <dlfcn.h>

#include <cstring>
#include <mutex>

#include "absl/strings/str_cat.h"

#if __has_include(<cuda.h>)
#include <cuda.h>
#define KILN_HAVE_CUDA_H 1
#endif

namespace kiln {

std::vector<void*> KernelArgs::pointers() {
  std::vector<void*> p;
  p.reserve(slots_.size());
  for (uint64_t& s : slots_) p.push_back(&s);
  return p;
}

KernelArgs& KernelArgs::push(const void* v, size_t bytes) {
  uint64_t slot = 0;
  std::memcpy(&slot, v, bytes);  // little-endian: a 4-byte value sits at the slot's start
  slots_.push_back(slot);
  return *this;
}

std::string arch_for_compute_capability(int major, int minor) {
  // sm_90a unlocks Hopper-only instructions (wgmma, setmaxnreg) that the kernels may use.
  if (major == 9 && minor == 0) return "sm_90a";
  return absl::StrCat("sm_", major, minor);
}

#ifdef KILN_HAVE_CUDA_H

/// The driver entry points kiln uses, by their ABI names (cuda.h #defines the unversioned names to
/// these; members have their own names so those macros never rewrite them).
struct CudaDriverApi {
  void* lib = nullptr;
  CUresult (*init)(unsigned) = nullptr;
  CUresult (*driver_get_version)(int*) = nullptr;
  CUresult (*device_get)(CUdevice*, int) = nullptr;
  CUresult (*device_get_count)(int*) = nullptr;
  CUresult (*device_get_attribute)(int*, CUdevice_attribute, CUdevice) = nullptr;
  CUresult (*device_get_name)(char*, int, CUdevice) = nullptr;
  CUresult (*primary_ctx_retain)(CUcontext*, CUdevice) = nullptr;
  CUresult (*primary_ctx_release)(CUdevice) = nullptr;
  CUresult (*ctx_set_current)(CUcontext) = nullptr;
  CUresult (*ctx_synchronize)() = nullptr;
  CUresult (*module_load_data)(CUmodule*, const void*) = nullptr;
  CUresult (*module_unload)(CUmodule) = nullptr;
  CUresult (*module_get_function)(CUfunction*, CUmodule, const char*) = nullptr;
  CUresult (*func_get_attribute)(int*, CUfunction_attribute, CUfunction) = nullptr;
  CUresult (*func_set_attribute)(CUfunction, CUfunction_attribute, int) = nullptr;
  CUresult (*occupancy_max_blocks)(int*, CUfunction, int, size_t) = nullptr;
  CUresult (*launch_kernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                            unsigned, CUstream, void**, void**) = nullptr;
  CUresult (*mem_alloc)(CUdeviceptr*, size_t) = nullptr;
  CUresult (*mem_free)(CUdeviceptr) = nullptr;
  CUresult (*memcpy_htod)(CUdeviceptr, const void*, size_t) = nullptr;
  CUresult (*memcpy_dtoh)(void*, CUdeviceptr, size_t) = nullptr;
  CUresult (*memset_d8)(CUdeviceptr, unsigned char, size_t) = nullptr;
  CUresult (*get_error_string)(CUresult, const char**) = nullptr;
  CUresult (*get_error_name)(CUresult, const char**) = nullptr;
  CUresult (*mem_get_info)(size_t*, size_t*) = nullptr;
  CUresult (*memcpy_htod_async)(CUdeviceptr, const void*, size_t, CUstream) = nullptr;
  CUresult (*memcpy_dtoh_async)(void*, CUdeviceptr, size_t, CUstream) = nullptr;
  CUresult (*memcpy_dtod_async)(CUdeviceptr, CUdeviceptr, size_t, CUstream) = nullptr;
  CUresult (*mem_alloc_host)(void**, size_t) = nullptr;
  CUresult (*mem_free_host)(void*) = nullptr;
  CUresult (*stream_create)(CUstream*, unsigned) = nullptr;
  CUresult (*stream_destroy)(CUstream) = nullptr;
  CUresult (*stream_synchronize)(CUstream) = nullptr;
  CUresult (*stream_begin_capture)(CUstream, CUstreamCaptureMode) = nullptr;
  CUresult (*stream_end_capture)(CUstream, CUgraph*) = nullptr;
  CUresult (*graph_instantiate)(CUgraphExec*, CUgraph, unsigned long long) = nullptr;
  CUresult (*graph_launch)(CUgraphExec, CUstream) = nullptr;
  CUresult (*graph_exec_destroy)(CUgraphExec) = nullptr;
  CUresult (*graph_destroy)(CUgraph) = nullptr;
  // Optional (timing only).
  CUresult (*event_create)(CUevent*, unsigned) = nullptr;
  CUresult (*event_record)(CUevent, CUstream) = nullptr;
  CUresult (*event_synchronize)(CUevent) = nullptr;
  CUresult (*event_elapsed_time)(float*, CUevent, CUevent) = nullptr;
  CUresult (*event_destroy)(CUevent) = nullptr;
};

namespace {

absl::Status check(const CudaDriverApi& api, CUresult r, const char* call) {
  if (r == CUDA_SUCCESS) return absl::OkStatus();
  const char* name = nullptr;
  const char* text = nullptr;
  if (api.get_error_name) api.get_error_name(r, &name);
  if (api.get_error_string) api.get_error_string(r, &text);
  std::string msg =
      absl::StrCat(call, " failed: ", name ? name : "CUDA error", " (",
                   text ? text : "no description", ", code ", static_cast<int>(r), ")");
  if (r == CUDA_ERROR_NO_DEVICE) return absl::UnavailableError(msg);
  return absl::InternalError(msg);
}

template <class F>
bool bind(void* lib, F& fn, const char* symbol) {
  fn = reinterpret_cast<F>(dlsym(lib, symbol));
  return fn != nullptr;
}

absl::StatusOr<std::shared_ptr<const CudaDriverApi>> load_driver() {
  void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    return absl::UnavailableError("no CUDA driver (libcuda.so.1 not found): GPU tests skip");
  }
  auto api = std::make_shared<CudaDriverApi>();
  api->lib = lib;  // never dlclose'd: the driver keeps threads and handlers alive
  const char* missing = nullptr;
  auto need = [&](auto& fn, const char* symbol) {
    if (!bind(lib, fn, symbol) && missing == nullptr) missing = symbol;
  };
  need(api->init, "cuInit");
  need(api->driver_get_version, "cuDriverGetVersion");
  need(api->device_get, "cuDeviceGet");
  need(api->device_get_count, "cuDeviceGetCount");
  need(api->device_get_attribute, "cuDeviceGetAttribute");
  need(api->device_get_name, "cuDeviceGetName");
  need(api->primary_ctx_retain, "cuDevicePrimaryCtxRetain");
  need(api->primary_ctx_release, "cuDevicePrimaryCtxRelease_v2");
  need(api->ctx_set_current, "cuCtxSetCurrent");
  need(api->ctx_synchronize, "cuCtxSynchronize");
  need(api->module_load_data, "cuModuleLoadData");
  need(api->module_unload, "cuModuleUnload");
  need(api->module_get_function, "cuModuleGetFunction");
  need(api->func_get_attribute, "cuFuncGetAttribute");
  need(api->func_set_attribute, "cuFuncSetAttribute");
  need(api->occupancy_max_blocks, "cuOccupancyMaxActiveBlocksPerMultiprocessor");
  need(api->launch_kernel, "cuLaunchKernel");
  need(api->mem_alloc, "cuMemAlloc_v2");
  need(api->mem_free, "cuMemFree_v2");
  need(api->memcpy_htod, "cuMemcpyHtoD_v2");
  need(api->memcpy_dtoh, "cuMemcpyDtoH_v2");
  need(api->memset_d8, "cuMemsetD8_v2");
  need(api->get_error_string, "cuGetErrorString");
  need(api->get_error_name, "cuGetErrorName");
  need(api->mem_get_info, "cuMemGetInfo_v2");
  need(api->memcpy_htod_async, "cuMemcpyHtoDAsync_v2");
  need(api->memcpy_dtoh_async, "cuMemcpyDtoHAsync_v2");
  need(api->memcpy_dtod_async, "cuMemcpyDtoDAsync_v2");
  need(api->mem_alloc_host, "cuMemAllocHost_v2");
  need(api->mem_free_host, "cuMemFreeHost");
  need(api->stream_create, "cuStreamCreate");
  need(api->stream_destroy, "cuStreamDestroy_v2");
  need(api->stream_synchronize, "cuStreamSynchronize");
  need(api->stream_begin_capture, "cuStreamBeginCapture_v2");
  need(api->stream_end_capture, "cuStreamEndCapture");
  need(api->graph_instantiate, "cuGraphInstantiateWithFlags");
  need(api->graph_launch, "cuGraphLaunch");
  need(api->graph_exec_destroy, "cuGraphExecDestroy");
  need(api->graph_destroy, "cuGraphDestroy");
  if (missing != nullptr) {
    return absl::UnavailableError(absl::StrCat("libcuda.so.1 has no ", missing,
                                               " (driver too old for kiln; needs CUDA 12+)"));
  }
  bind(lib, api->event_create, "cuEventCreate");
  bind(lib, api->event_record, "cuEventRecord");
  bind(lib, api->event_synchronize, "cuEventSynchronize");
  if (!bind(lib, api->event_elapsed_time, "cuEventElapsedTime_v2")) {
    bind(lib, api->event_elapsed_time, "cuEventElapsedTime");
  }
  bind(lib, api->event_destroy, "cuEventDestroy_v2");
  if (absl::Status s = check(*api, api->init(0), "cuInit"); !s.ok()) {
    if (s.code() == absl::StatusCode::kUnavailable) return s;
    return absl::UnavailableError(
        absl::StrCat(s.message(),
                     " — no usable GPU (under AddressSanitizer, set "
                     "ASAN_OPTIONS=protect_shadow_gap=0: the driver maps memory ASan reserves)"));
  }
  return std::shared_ptr<const CudaDriverApi>(std::move(api));
}

// Loaded once per process; every GpuDevice shares the table.
absl::StatusOr<std::shared_ptr<const CudaDriverApi>> driver() {
  static std::once_flag once;
  static absl::StatusOr<std::shared_ptr<const CudaDriverApi>>* api = nullptr;
  std::call_once(
      once, [] { api = new absl::StatusOr<std::shared_ptr<const CudaDriverApi>>(load_driver()); });
  return *api;
}

}  // namespace

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    if (api_ && ptr_) api_->mem_free(ptr_);
    api_ = std::move(o.api_);
    ptr_ = o.ptr_;
    bytes_ = o.bytes_;
    o.ptr_ = 0;
    o.bytes_ = 0;
  }
  return *this;
}

DeviceBuffer::~DeviceBuffer() {
  if (api_ && ptr_) api_->mem_free(ptr_);
}

GpuDevice::GpuDevice(GpuDevice&& o) noexcept { *this = std::move(o); }

GpuDevice& GpuDevice::operator=(GpuDevice&& o) noexcept {
  if (this != &o) {
    api_ = std::move(o.api_);
    ordinal_ = o.ordinal_;
    context_ = o.context_;
    stream_ = o.stream_;
    o.stream_ = nullptr;
    modules_ = std::move(o.modules_);
    name_ = std::move(o.name_);
    arch_ = std::move(o.arch_);
    cc_major_ = o.cc_major_;
    cc_minor_ = o.cc_minor_;
    sm_count_ = o.sm_count_;
    driver_version_ = o.driver_version_;
    o.context_ = nullptr;
    o.modules_.clear();
  }
  return *this;
}

GpuDevice::~GpuDevice() {
  if (!api_ || context_ == nullptr) return;
  if (stream_ != nullptr) api_->stream_destroy(static_cast<CUstream>(stream_));
  for (void* m : modules_) api_->module_unload(static_cast<CUmodule>(m));
  CUdevice dev = 0;
  if (api_->device_get(&dev, ordinal_) == CUDA_SUCCESS) api_->primary_ctx_release(dev);
}

std::string GpuDevice::describe() const {
  return absl::StrCat(name_, " (", arch_, ", ", sm_count_, " SMs, driver ", driver_version_ / 1000,
                      ".", driver_version_ % 1000 / 10, ")");
}

absl::StatusOr<DeviceBuffer> GpuDevice::alloc(size_t bytes) {
  CUdeviceptr p = 0;
  // A zero-byte buffer still gets a real (1-byte) allocation so kernels see a valid pointer.
  if (absl::Status s = check(*api_, api_->mem_alloc(&p, bytes == 0 ? 1 : bytes), "cuMemAlloc_v2");
      !s.ok()) {
    return absl::Status(s.code(), absl::StrCat(s.message(), " for ", bytes, " bytes"));
  }
  return DeviceBuffer(api_, p, bytes);
}

absl::Status GpuDevice::memory_info(size_t* free_bytes, size_t* total_bytes) {
  return check(*api_, api_->mem_get_info(free_bytes, total_bytes), "cuMemGetInfo_v2");
}

absl::Status GpuDevice::upload_async(DevicePtr dst, const void* src, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  return check(*api_, api_->memcpy_htod_async(dst, src, bytes, static_cast<CUstream>(stream_)),
               "cuMemcpyHtoDAsync_v2");
}

absl::Status GpuDevice::download_async(void* dst, DevicePtr src, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  return check(*api_, api_->memcpy_dtoh_async(dst, src, bytes, static_cast<CUstream>(stream_)),
               "cuMemcpyDtoHAsync_v2");
}

absl::Status GpuDevice::copy_async(DevicePtr dst, DevicePtr src, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  return check(*api_, api_->memcpy_dtod_async(dst, src, bytes, static_cast<CUstream>(stream_)),
               "cuMemcpyDtoDAsync_v2");
}

absl::StatusOr<void*> GpuDevice::alloc_host(size_t bytes) {
  void* p = nullptr;
  if (absl::Status s =
          check(*api_, api_->mem_alloc_host(&p, bytes == 0 ? 1 : bytes), "cuMemAllocHost_v2");
      !s.ok()) {
    return absl::Status(s.code(), absl::StrCat(s.message(), " for ", bytes, " pinned bytes"));
  }
  return p;
}

void GpuDevice::free_host(void* p) {
  if (p != nullptr) api_->mem_free_host(p);
}

absl::Status GpuDevice::begin_capture() {
  return check(
      *api_,
      api_->stream_begin_capture(static_cast<CUstream>(stream_), CU_STREAM_CAPTURE_MODE_RELAXED),
      "cuStreamBeginCapture_v2");
}

absl::StatusOr<void*> GpuDevice::end_capture() {
  CUgraph graph = nullptr;
  if (absl::Status s =
          check(*api_, api_->stream_end_capture(static_cast<CUstream>(stream_), &graph),
                "cuStreamEndCapture");
      !s.ok()) {
    return s;
  }
  CUgraphExec exec = nullptr;
  absl::Status s =
      check(*api_, api_->graph_instantiate(&exec, graph, 0), "cuGraphInstantiateWithFlags");
  api_->graph_destroy(graph);  // the executable graph keeps what it needs
  if (!s.ok()) return s;
  return static_cast<void*>(exec);
}

absl::Status GpuDevice::replay(void* graph_exec) {
  return check(
      *api_,
      api_->graph_launch(static_cast<CUgraphExec>(graph_exec), static_cast<CUstream>(stream_)),
      "cuGraphLaunch");
}

void GpuDevice::destroy_graph(void* graph_exec) {
  if (graph_exec != nullptr) api_->graph_exec_destroy(static_cast<CUgraphExec>(graph_exec));
}

absl::Status GpuDevice::upload(DevicePtr dst, const void* src, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  return check(*api_, api_->memcpy_htod(dst, src, bytes), "cuMemcpyHtoD_v2");
}

absl::Status GpuDevice::download(void* dst, DevicePtr src, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  return check(*api_, api_->memcpy_dtoh(dst, src, bytes), "cuMemcpyDtoH_v2");
}

absl::Status GpuDevice::fill_bytes(DevicePtr dst, uint8_t value, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  return check(*api_, api_->memset_d8(dst, value, bytes), "cuMemsetD8_v2");
}

absl::StatusOr<GpuKernel> GpuDevice::load_kernel(const std::string& cubin,
                                                 const std::string& entry) {
  CUmodule module = nullptr;
  if (absl::Status s =
          check(*api_, api_->module_load_data(&module, cubin.data()), "cuModuleLoadData");
      !s.ok()) {
    return absl::Status(s.code(), absl::StrCat(entry, ": ", s.message()));
  }
  modules_.push_back(module);
  CUfunction fn = nullptr;
  if (absl::Status s = check(*api_, api_->module_get_function(&fn, module, entry.c_str()),
                             "cuModuleGetFunction");
      !s.ok()) {
    return absl::Status(s.code(), absl::StrCat(entry, ": ", s.message()));
  }
  GpuKernel k;
  k.name = entry;
  k.module = module;
  k.function = fn;
  api_->func_get_attribute(&k.registers, CU_FUNC_ATTRIBUTE_NUM_REGS, fn);
  api_->func_get_attribute(&k.static_smem, CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, fn);
  api_->func_get_attribute(&k.max_threads_per_block, CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, fn);
  return k;
}

absl::StatusOr<int> GpuDevice::resident_blocks_per_sm(const GpuKernel& kernel, int threads,
                                                      size_t dynamic_smem) {
  CUfunction fn = static_cast<CUfunction>(kernel.function);
  if (dynamic_smem > 48 * 1024) {
    if (absl::Status s =
            check(*api_,
                  api_->func_set_attribute(fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                           static_cast<int>(dynamic_smem)),
                  "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)");
        !s.ok()) {
      return absl::Status(s.code(), absl::StrCat(kernel.name, ": ", s.message()));
    }
  }
  int blocks = 0;
  if (absl::Status s = check(*api_, api_->occupancy_max_blocks(&blocks, fn, threads, dynamic_smem),
                             "cuOccupancyMaxActiveBlocksPerMultiprocessor");
      !s.ok()) {
    return absl::Status(s.code(), absl::StrCat(kernel.name, ": ", s.message()));
  }
  return blocks;
}

absl::Status GpuDevice::launch(const GpuKernel& kernel, const LaunchDims& d, KernelArgs& args) {
  const unsigned threads = d.block[0] * d.block[1] * d.block[2];
  if (d.grid[0] * d.grid[1] * d.grid[2] == 0 || threads == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(kernel.name, ": empty launch (grid ", d.grid[0], "x", d.grid[1], "x",
                     d.grid[2], ", block ", d.block[0], "x", d.block[1], "x", d.block[2], ")"));
  }
  if (kernel.max_threads_per_block > 0 &&
      static_cast<int>(threads) > kernel.max_threads_per_block) {
    return absl::InvalidArgumentError(absl::StrCat(kernel.name, ": block of ", threads,
                                                   " threads exceeds the kernel's limit of ",
                                                   kernel.max_threads_per_block));
  }
  CUfunction fn = static_cast<CUfunction>(kernel.function);
  if (d.dynamic_smem > 48 * 1024) {
    if (absl::Status s =
            check(*api_,
                  api_->func_set_attribute(fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                           static_cast<int>(d.dynamic_smem)),
                  "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)");
        !s.ok()) {
      return absl::Status(s.code(), absl::StrCat(kernel.name, ": ", s.message()));
    }
  }
  std::vector<void*> params = args.pointers();
  absl::Status s =
      check(*api_,
            api_->launch_kernel(fn, d.grid[0], d.grid[1], d.grid[2], d.block[0], d.block[1],
                                d.block[2], static_cast<unsigned>(d.dynamic_smem),
                                static_cast<CUstream>(stream_), params.data(), nullptr),
            "cuLaunchKernel");
  if (!s.ok()) return absl::Status(s.code(), absl::StrCat(kernel.name, ": ", s.message()));
  return absl::OkStatus();
}

absl::Status GpuDevice::synchronize() {
  return check(*api_, api_->ctx_synchronize(), "cuCtxSynchronize");
}

absl::Status GpuDevice::make_current() {
  return check(*api_, api_->ctx_set_current(static_cast<CUcontext>(context_)), "cuCtxSetCurrent");
}

absl::StatusOr<float> GpuDevice::time_ms(const std::function<absl::Status()>& fn) {
  if (!api_->event_create || !api_->event_record || !api_->event_synchronize ||
      !api_->event_elapsed_time || !api_->event_destroy) {
    return absl::UnimplementedError("this driver lacks the cuEvent timing calls");
  }
  CUevent start = nullptr, stop = nullptr;
  if (absl::Status s = check(*api_, api_->event_create(&start, CU_EVENT_DEFAULT), "cuEventCreate");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = check(*api_, api_->event_create(&stop, CU_EVENT_DEFAULT), "cuEventCreate");
      !s.ok()) {
    api_->event_destroy(start);
    return s;
  }
  float ms = 0;
  CUstream stream = static_cast<CUstream>(stream_);
  absl::Status s = check(*api_, api_->event_record(start, stream), "cuEventRecord");
  if (s.ok()) s = fn();
  if (s.ok()) s = check(*api_, api_->event_record(stop, stream), "cuEventRecord");
  if (s.ok()) s = check(*api_, api_->event_synchronize(stop), "cuEventSynchronize");
  if (s.ok()) s = check(*api_, api_->event_elapsed_time(&ms, start, stop), "cuEventElapsedTime");
  api_->event_destroy(start);
  api_->event_destroy(stop);
  if (!s.ok()) return s;
  return ms;
}

absl::StatusOr<GpuDevice> open_gpu(int ordinal) {
  absl::StatusOr<std::shared_ptr<const CudaDriverApi>> api = driver();
  if (!api.ok()) return api.status();
  const CudaDriverApi& a = **api;
  int count = 0;
  if (absl::Status s = check(a, a.device_get_count(&count), "cuDeviceGetCount"); !s.ok()) return s;
  if (ordinal < 0 || ordinal >= count) {
    return absl::UnavailableError(
        absl::StrCat("no CUDA device ", ordinal, " (the driver sees ", count, "): GPU tests skip"));
  }
  GpuDevice g;
  g.api_ = *api;
  g.ordinal_ = ordinal;
  CUdevice dev = 0;
  if (absl::Status s = check(a, a.device_get(&dev, ordinal), "cuDeviceGet"); !s.ok()) return s;
  char name[256] = {};
  if (absl::Status s = check(a, a.device_get_name(name, sizeof(name) - 1, dev), "cuDeviceGetName");
      !s.ok()) {
    return s;
  }
  g.name_ = name;
  for (auto [attr, out] : {std::pair{CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, &g.cc_major_},
                           std::pair{CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, &g.cc_minor_},
                           std::pair{CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, &g.sm_count_}}) {
    if (absl::Status s = check(a, a.device_get_attribute(out, attr, dev), "cuDeviceGetAttribute");
        !s.ok()) {
      return s;
    }
  }
  a.driver_get_version(&g.driver_version_);
  g.arch_ = arch_for_compute_capability(g.cc_major_, g.cc_minor_);
  CUcontext ctx = nullptr;
  if (absl::Status s = check(a, a.primary_ctx_retain(&ctx, dev), "cuDevicePrimaryCtxRetain");
      !s.ok()) {
    return s;
  }
  g.context_ = ctx;
  if (absl::Status s = check(a, a.ctx_set_current(ctx), "cuCtxSetCurrent"); !s.ok()) return s;
  CUstream stream = nullptr;
  if (absl::Status s = check(a, a.stream_create(&stream, CU_STREAM_DEFAULT), "cuStreamCreate");
      !s.ok()) {
    return s;
  }
  g.stream_ = stream;
  return g;
}

#else  // no cuda.h at build time

struct CudaDriverApi {};

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  api_ = std::move(o.api_);
  ptr_ = o.ptr_;
  bytes_ = o.bytes_;
  return *this;
}
DeviceBuffer::~DeviceBuffer() = default;
GpuDevice::GpuDevice(GpuDevice&& o) noexcept = default;
GpuDevice& GpuDevice::operator=(GpuDevice&& o) noexcept = default;
GpuDevice::~GpuDevice() = default;
std::string GpuDevice::describe() const { return name_; }
namespace {
absl::Status no_cuda() {
  return absl::UnavailableError(
      "kiln was built without the CUDA toolkit's cuda.h: no GPU support (GPU tests skip)");
}
}  // namespace
absl::StatusOr<DeviceBuffer> GpuDevice::alloc(size_t) { return no_cuda(); }
absl::Status GpuDevice::upload(DevicePtr, const void*, size_t) { return no_cuda(); }
absl::Status GpuDevice::memory_info(size_t*, size_t*) { return no_cuda(); }
absl::Status GpuDevice::upload_async(DevicePtr, const void*, size_t) { return no_cuda(); }
absl::Status GpuDevice::download_async(void*, DevicePtr, size_t) { return no_cuda(); }
absl::Status GpuDevice::copy_async(DevicePtr, DevicePtr, size_t) { return no_cuda(); }
absl::StatusOr<void*> GpuDevice::alloc_host(size_t) { return no_cuda(); }
void GpuDevice::free_host(void*) {}
absl::Status GpuDevice::begin_capture() { return no_cuda(); }
absl::StatusOr<void*> GpuDevice::end_capture() { return no_cuda(); }
absl::Status GpuDevice::replay(void*) { return no_cuda(); }
void GpuDevice::destroy_graph(void*) {}
absl::Status GpuDevice::download(void*, DevicePtr, size_t) { return no_cuda(); }
absl::Status GpuDevice::fill_bytes(DevicePtr, uint8_t, size_t) { return no_cuda(); }
absl::StatusOr<GpuKernel> GpuDevice::load_kernel(const std::string&, const std::string&) {
  return no_cuda();
}
absl::Status GpuDevice::launch(const GpuKernel&, const LaunchDims&, KernelArgs&) {
  return no_cuda();
}
absl::StatusOr<int> GpuDevice::resident_blocks_per_sm(const GpuKernel&, int, size_t) {
  return no_cuda();
}
absl::Status GpuDevice::synchronize() { return no_cuda(); }
absl::Status GpuDevice::make_current() { return no_cuda(); }
absl::StatusOr<float> GpuDevice::time_ms(const std::function<absl::Status()>&) { return no_cuda(); }
absl::StatusOr<GpuDevice> open_gpu(int) { return no_cuda(); }

#endif  // KILN_HAVE_CUDA_H

}  // namespace kiln
