// The CUDA driver API, loaded at run time with dlopen("libcuda.so.1") and never linked, so every
// kiln binary starts on a machine without a GPU driver (DESIGN.md, runtime/device). Every CUresult
// becomes an absl::Status naming the call and the driver's error string. cuda.h supplies types
// only, inside driver.cc; this header exposes none of them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kiln {

/// A device address (CUdeviceptr).
using DevicePtr = uint64_t;

struct CudaDriverApi;  // the dlsym'd function table (driver.cc)

/// Launch geometry: grid and block per axis.
struct LaunchDims {
  unsigned grid[3] = {1, 1, 1};
  unsigned block[3] = {1, 1, 1};
  size_t dynamic_smem = 0;
};

/// One kernel entry of a loaded cubin, with what the driver reports about it.
struct GpuKernel {
  std::string name;
  void* module = nullptr;    // CUmodule (owned by the GpuDevice that loaded it)
  void* function = nullptr;  // CUfunction
  int registers = 0;
  int static_smem = 0;
  int max_threads_per_block = 0;
};

/// Kernel arguments in entry order: each value is stored by value in an 8-byte slot and
/// cuLaunchKernel gets a pointer to each slot.
class KernelArgs {
 public:
  KernelArgs& ptr(DevicePtr p) { return push(&p, sizeof(p)); }
  KernelArgs& i32(int32_t v) { return push(&v, sizeof(v)); }
  KernelArgs& i64(int64_t v) { return push(&v, sizeof(v)); }
  KernelArgs& f32(float v) { return push(&v, sizeof(v)); }
  size_t size() const { return slots_.size(); }
  /// Pointers to the slots (valid until the next push).
  std::vector<void*> pointers();

 private:
  KernelArgs& push(const void* v, size_t bytes);
  std::vector<uint64_t> slots_;
};

/// A device allocation freed on destruction.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(std::shared_ptr<const CudaDriverApi> api, DevicePtr ptr, size_t bytes)
      : api_(std::move(api)), ptr_(ptr), bytes_(bytes) {}
  DeviceBuffer(DeviceBuffer&& o) noexcept { *this = std::move(o); }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer();

  DevicePtr ptr() const { return ptr_; }
  size_t bytes() const { return bytes_; }

 private:
  std::shared_ptr<const CudaDriverApi> api_;
  DevicePtr ptr_ = 0;
  size_t bytes_ = 0;
};

/// One GPU with its primary context made current on the calling thread. Not thread-safe.
class GpuDevice {
 public:
  GpuDevice(GpuDevice&&) noexcept;
  GpuDevice& operator=(GpuDevice&&) noexcept;
  ~GpuDevice();

  const std::string& name() const { return name_; }
  int cc_major() const { return cc_major_; }
  int cc_minor() const { return cc_minor_; }
  int sm_count() const { return sm_count_; }
  /// NVRTC target: "sm_90a" for compute capability 9.0 (Hopper), else "sm_XY".
  const std::string& arch() const { return arch_; }
  /// "NVIDIA H100 80GB HBM3 (sm_90a, 132 SMs, driver 13.0)".
  std::string describe() const;

  absl::StatusOr<DeviceBuffer> alloc(size_t bytes);
  /// Free and total device memory in bytes (cuMemGetInfo).
  absl::Status memory_info(size_t* free_bytes, size_t* total_bytes);
  /// Synchronous copies (they wait for the device's stream first).
  absl::Status upload(DevicePtr dst, const void* src, size_t bytes);
  absl::Status download(void* dst, DevicePtr src, size_t bytes);
  /// Copies enqueued on the device's stream (stream order; `src` / `dst` host memory must stay
  /// valid until the stream reaches them — pinned memory from alloc_host() for true overlap).
  absl::Status upload_async(DevicePtr dst, const void* src, size_t bytes);
  absl::Status download_async(void* dst, DevicePtr src, size_t bytes);
  absl::Status copy_async(DevicePtr dst, DevicePtr src, size_t bytes);
  /// Page-locked host memory (freed with free_host), so async copies do not stage.
  absl::StatusOr<void*> alloc_host(size_t bytes);
  void free_host(void* p);
  /// Sets every byte of [dst, dst + bytes) to `value` (0xFF poisons floats with NaN).
  absl::Status fill_bytes(DevicePtr dst, uint8_t value, size_t bytes);

  /// Loads `cubin` and resolves `entry`. Modules live until the device is destroyed.
  absl::StatusOr<GpuKernel> load_kernel(const std::string& cubin, const std::string& entry);
  /// How many blocks of `threads` threads and `dynamic_smem` bytes of dynamic shared memory one SM
  /// holds at once (cuOccupancyMaxActiveBlocksPerMultiprocessor, after raising the kernel's
  /// dynamic shared-memory limit as launch() would).
  absl::StatusOr<int> resident_blocks_per_sm(const GpuKernel& kernel, int threads,
                                             size_t dynamic_smem);
  /// Launches on the device's stream; raises the kernel's dynamic shared-memory limit first when
  /// `dims.dynamic_smem` exceeds the 48 KB default.
  absl::Status launch(const GpuKernel& kernel, const LaunchDims& dims, KernelArgs& args);
  /// Waits for all work; a kernel fault (illegal address, ...) surfaces here.
  absl::Status synchronize();
  /// Makes the device's context current on the calling thread: a thread other than the one that
  /// opened the device (a server's engine thread) has none. Cheap (a thread-local store).
  absl::Status make_current();

  /// The one stream every launch, GEMM and async copy of this device is ordered on (a CUstream,
  /// created with the context; blocking, so the legacy stream's synchronous copies order with it).
  void* stream() const { return stream_; }

  /// CUDA graphs: everything enqueued on stream() between begin_capture and end_capture is
  /// recorded, not run; end_capture instantiates it. replay() launches it on stream().
  absl::Status begin_capture();
  absl::StatusOr<void*> end_capture();  // a CUgraphExec
  absl::Status replay(void* graph_exec);
  void destroy_graph(void* graph_exec);
  /// Milliseconds `fn` takes on the GPU (events around it), or an error.
  absl::StatusOr<float> time_ms(const std::function<absl::Status()>& fn);

 private:
  friend absl::StatusOr<GpuDevice> open_gpu(int ordinal);
  GpuDevice() = default;

  std::shared_ptr<const CudaDriverApi> api_;
  int ordinal_ = 0;
  void* context_ = nullptr;  // CUcontext (the primary context)
  void* stream_ = nullptr;   // CUstream
  std::vector<void*> modules_;
  std::string name_, arch_;
  int cc_major_ = 0, cc_minor_ = 0, sm_count_ = 0, driver_version_ = 0;
};

/// Loads the driver, initializes it and opens device `ordinal`. Unavailable (with a message a
/// test can print as its skip reason) when libcuda.so.1 is absent, this binary was built without
/// cuda.h, or no device is present; other failures name the driver call.
absl::StatusOr<GpuDevice> open_gpu(int ordinal = 0);

/// The NVRTC arch for a compute capability: 9.0 -> "sm_90a", else "sm_<major><minor>".
std::string arch_for_compute_capability(int major, int minor);

}  // namespace kiln
