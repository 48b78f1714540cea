// fastlift_run: run an exported fastlift lifter package (AOTInductor .pt2) without Python.
//
//   fastlift_run PACKAGE.pt2 --input KEYPOINTS.npy --output POSES.npy
//                [--stream] [--device cpu|cuda[:i]] [--repeat N] [--threads N]
//
// Input: float32/float64 .npy of shape (T, J_in, F) or (B, T, J_in, F) (J_in, F as exported).
// Output: float32 .npy of shape (T, J_out, 3) or (B, T, J_out, 3): one pose per input frame,
// identical (to float rounding) to Python's FusedInferenceLifter.lift / fastlift.reference.lift_sequence.
//
// Whole-sequence mode runs the package's "model" once per repeat. --stream feeds the B sequences
// frame by frame through the package's "step" model (B lock-step streams), emitting each
// frame's pose after the model's delay (0 for causal models, pad for symmetric ones) and
// flushing a symmetric stream by pushing its last frame `delay` more times. Timing goes to
// stdout; errors go to stderr with exit status 1 (bad input/package) or 2 (bad command line).
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/cuda.h>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "npy.hpp"

namespace {

const char* kFormat = "fastlift-lifter/1";

const char* kUsage =
    "usage: fastlift_run PACKAGE.pt2 --input KEYPOINTS.npy --output POSES.npy\n"
    "                    [--stream] [--device cpu|cuda[:i]] [--repeat N] [--threads N]\n"
    "\n"
    "  PACKAGE.pt2      package written by `fastlift export`\n"
    "  --input FILE     2D keypoints, float32/float64 .npy, shape (T, J, F) or (B, T, J, F)\n"
    "  --output FILE    3D poses written as float32 .npy, shape (T, J_out, 3) or (B, T, J_out, 3)\n"
    "  --stream         frame-by-frame inference with the package's streaming step\n"
    "                   (export with --stream or --causal-stream)\n"
    "  --device DEV     cpu or cuda[:index]; must match the device the package was built for\n"
    "                   (default: that device)\n"
    "  --repeat N       timed repetitions after one warm-up run (default 1)\n"
    "  --threads N      CPU threads for the model's kernels (default: libtorch's choice)\n";

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct RunError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Options {
  std::string package, input, output, device;
  bool stream = false;
  int repeat = 1;
  int threads = 0;
};

int parse_positive(const std::string& flag, const std::string& text) {
  char* end = nullptr;
  const long v = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || v < 1 || v > 1000000)
    throw UsageError(flag + ": expected a positive integer, got '" + text + "'");
  return static_cast<int>(v);
}

Options parse_args(int argc, char** argv) {
  Options o;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const std::string& flag) -> std::string {
      if (i + 1 >= argc) throw UsageError(flag + ": expected a value");
      return argv[++i];
    };
    if (a == "-h" || a == "--help") {
      std::cout << kUsage;
      std::exit(0);
    } else if (a == "--input") {
      o.input = value(a);
    } else if (a == "--output") {
      o.output = value(a);
    } else if (a == "--device") {
      o.device = value(a);
    } else if (a == "--repeat") {
      o.repeat = parse_positive(a, value(a));
    } else if (a == "--threads") {
      o.threads = parse_positive(a, value(a));
    } else if (a == "--stream") {
      o.stream = true;
    } else if (a.size() > 1 && a[0] == '-') {
      throw UsageError("unknown option '" + a + "'");
    } else {
      positional.push_back(a);
    }
  }
  if (positional.size() != 1)
    throw UsageError("expected exactly one PACKAGE.pt2 argument, got " + std::to_string(positional.size()));
  o.package = positional[0];
  if (o.input.empty()) throw UsageError("--input: required");
  if (o.output.empty()) throw UsageError("--output: required");
  return o;
}

bool file_exists(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return static_cast<bool>(f);
}

std::string shape_str(at::IntArrayRef shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + ")";
}

// Metadata accessors with clear errors.
struct Meta {
  std::unordered_map<std::string, std::string> kv;
  std::string path;

  std::string str(const std::string& key) const {
    auto it = kv.find("fastlift." + key);
    if (it == kv.end()) throw RunError("package '" + path + "': metadata has no fastlift." + key + " entry");
    return it->second;
  }
  int64_t integer(const std::string& key) const {
    const std::string v = str(key);
    char* end = nullptr;
    const long long x = std::strtoll(v.c_str(), &end, 10);
    if (v.empty() || *end != '\0') throw RunError("package '" + path + "': fastlift." + key + " is not an integer: " + v);
    return x;
  }
};

// libtorch's loader errors span many lines (C++ frames, archive listings): keep the first line.
std::string first_line(const std::string& text) {
  const auto end = text.find('\n');
  return end == std::string::npos ? text : text.substr(0, end) + " ...";
}

std::unique_ptr<torch::inductor::AOTIModelPackageLoader> load_model(const std::string& path, const std::string& name,
                                                                    c10::DeviceIndex device_index) {
  const std::string hint = " (is it a package written by `fastlift export`? a training checkpoint is not one)";
  {
    std::ifstream f(path, std::ios::binary);
    char magic[2] = {0, 0};
    f.read(magic, 2);
    if (!f || magic[0] != 'P' || magic[1] != 'K')  // .pt2 packages are zip archives
      throw RunError("cannot load model '" + name + "' from package '" + path + "': not a .pt2 package (not a zip "
                     "archive)" + hint);
  }
  try {
    return std::make_unique<torch::inductor::AOTIModelPackageLoader>(path, name, false, 1, device_index);
  } catch (const c10::Error& e) {
    throw RunError("cannot load model '" + name + "' from package '" + path + "': " +
                   first_line(e.what_without_backtrace()) + hint);
  } catch (const std::exception& e) {
    throw RunError("cannot load model '" + name + "' from package '" + path + "': " + first_line(e.what()) + hint);
  }
}

at::ScalarType parse_dtype(const std::string& name) {
  if (name == "float32") return at::kFloat;
  if (name == "bfloat16") return at::kBFloat16;
  if (name == "float16") return at::kHalf;
  throw RunError("package: unsupported state dtype '" + name + "'");
}

std::vector<std::pair<int64_t, int64_t>> parse_state_shapes(const std::string& text) {
  std::vector<std::pair<int64_t, int64_t>> shapes;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ';')) {
    if (item.empty()) continue;
    const size_t x = item.find('x');
    if (x == std::string::npos) throw RunError("package: malformed fastlift.state_shapes entry '" + item + "'");
    shapes.emplace_back(std::stoll(item.substr(0, x)), std::stoll(item.substr(x + 1)));
  }
  if (shapes.empty()) throw RunError("package: fastlift.state_shapes is empty");
  return shapes;
}

double now_ms() {
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double, std::milli>(clock::now().time_since_epoch()).count();
}

struct Timer {
  bool cuda;
  void sync() const {
    if (cuda) torch::cuda::synchronize();
  }
};

std::vector<at::Tensor> run_checked(torch::inductor::AOTIModelPackageLoader& model, const std::vector<at::Tensor>& in,
                                    const char* what) {
  try {
    return model.run(in);
  } catch (const c10::Error& e) {
    throw RunError(std::string(what) + " failed: " + e.what_without_backtrace());
  }
}

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(q * (v.size() - 1) + 0.5));
  return v[i];
}

int run(const Options& opt) {
  if (!file_exists(opt.package)) throw RunError("package: no such file: '" + opt.package + "'");
  if (!file_exists(opt.input)) throw RunError("--input: no such file: '" + opt.input + "'");
  {
    // Fail before any work if the output cannot be written.
    const size_t slash = opt.output.find_last_of('/');
    const std::string dir = slash == std::string::npos ? "." : opt.output.substr(0, slash == 0 ? 1 : slash);
    std::ifstream probe(dir);
    if (!probe) throw RunError("--output: folder '" + dir + "' does not exist");
  }
  if (opt.threads > 0) at::set_num_threads(opt.threads);

  fastlift::NpyArray arr;
  try {
    arr = fastlift::read_npy(opt.input);
  } catch (const fastlift::NpyError& e) {
    throw RunError(std::string("--input: ") + e.what());
  }

  // Device: parsed up front so that the loader is created for the right one.
  c10::DeviceIndex device_index = -1;
  std::string want_type;
  if (!opt.device.empty()) {
    try {
      const c10::Device d(opt.device);
      if (!d.is_cpu() && !d.is_cuda()) throw RunError("");
      want_type = d.is_cpu() ? "cpu" : "cuda";
      if (d.has_index()) device_index = d.index();
    } catch (const std::exception&) {
      throw RunError("--device: expected cpu or cuda[:index], got '" + opt.device + "'");
    }
    if (want_type == "cuda" && !torch::cuda::is_available())
      throw RunError("--device: '" + opt.device + "' requested but this libtorch sees no CUDA device");
  }

  const double t_load0 = now_ms();
  auto model = load_model(opt.package, "model", device_index);
  Meta meta{model->get_metadata(), opt.package};
  if (meta.kv.find("fastlift.format") == meta.kv.end())
    throw RunError("package '" + opt.package + "' is not a fastlift package (no fastlift.format metadata); export it "
                   "with `fastlift export`");
  if (meta.str("format") != kFormat)
    throw RunError("package '" + opt.package + "' has format '" + meta.str("format") + "', this runner reads '" +
                   kFormat + "'");
  const std::string pkg_device = meta.str("device");
  if (!want_type.empty() && want_type != pkg_device)
    throw RunError("--device: the package was compiled for " + pkg_device + " and cannot run on " + opt.device +
                   "; export it again with --device " + want_type);
  if (pkg_device == "cuda" && !torch::cuda::is_available())
    throw RunError("package: compiled for cuda, but this libtorch sees no CUDA device");
  const int64_t joints_in = meta.integer("joints_in"), features = meta.integer("in_features");
  const int64_t joints_out = meta.integer("joints_out"), delay = meta.integer("delay");

  // Input checks: (T, J, F) or (B, T, J, F) with the package's J and F.
  const auto& s = arr.shape;
  const bool batched = s.size() == 4;
  if (s.size() != 3 && s.size() != 4)
    throw RunError("--input: expected keypoints of shape (frames, " + std::to_string(joints_in) + ", " +
                   std::to_string(features) + ") or (batch, frames, " + std::to_string(joints_in) + ", " +
                   std::to_string(features) + "), got " + arr.shape_str());
  if (s[s.size() - 2] != joints_in || s[s.size() - 1] != features)
    throw RunError("--input: the model expects " + std::to_string(joints_in) + " joints x " + std::to_string(features) +
                   " features per frame, got " + std::to_string(s[s.size() - 2]) + " x " +
                   std::to_string(s[s.size() - 1]) + " (shape " + arr.shape_str() + ")");
  const int64_t batch = batched ? s[0] : 1, frames = s[s.size() - 3];
  if (batch < 1 || frames < 1) throw RunError("--input: no frames in shape " + arr.shape_str());

  auto host = at::from_blob(arr.data.data(), {batch, frames, joints_in, features},
                               arr.word_size == 4 ? at::kFloat : at::kDouble);
  if (!at::isfinite(host).all().item<bool>())
    throw RunError("--input: contains NaN or infinite values; fill missing detections before lifting");
  const c10::Device device = pkg_device == "cuda" ? c10::Device(c10::kCUDA, device_index < 0 ? 0 : device_index)
                                                  : c10::Device(c10::kCPU);
  const at::Tensor x = host.to(at::kFloat).to(device).contiguous();
  const Timer timer{device.is_cuda()};

  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> step;
  std::string impl = meta.str("impl");
  if (opt.stream) {
    if (meta.str("has_step") != "1")
      throw RunError("--stream: package '" + opt.package + "' has no streaming step; export it with --stream "
                     "(or --causal-stream for a causal model)");
    step = load_model(opt.package, "step", device_index);
    const auto step_meta = step->get_metadata();
    const auto it = step_meta.find("fastlift.impl");
    if (it != step_meta.end()) impl = it->second;
  }
  const double t_load = now_ms() - t_load0;

  std::cout << "fastlift_run: " << opt.package << ": " << (opt.stream ? "streaming" : "whole-sequence") << ", "
            << batch << " x " << frames << " frames, " << pkg_device << " " << meta.str("dtype") << " (impl "
            << impl << "), receptive field " << meta.str("receptive_field") << ", "
            << (meta.str("causal") == "1" ? "causal" : "symmetric") << "\n";
  std::printf("  load %.1f ms\n", t_load);

  at::Tensor poses;
  if (!opt.stream) {
    std::vector<double> times;
    for (int r = 0; r <= opt.repeat; ++r) {  // r == 0: warm-up
      const double t0 = now_ms();
      auto out = run_checked(*model, {x}, "model");
      timer.sync();
      times.push_back(now_ms() - t0);
      poses = out.at(0);
    }
    const std::vector<double> timed(times.begin() + 1, times.end());
    double total = 0;
    for (double t : timed) total += t;
    const double mean = total / timed.size();
    std::printf("  first run %.3f ms; %d timed run(s): total %.3f ms, mean %.3f ms, min %.3f ms; %.1f frames/s\n",
                times[0], opt.repeat, total, mean, *std::min_element(timed.begin(), timed.end()),
                batch * frames / (mean / 1000.0));
  } else {
    const auto shapes = parse_state_shapes(meta.str("state_shapes"));
    const at::ScalarType state_dtype = parse_dtype(meta.str("state_dtype"));
    const auto opts_state = at::TensorOptions().dtype(state_dtype).device(device);
    std::vector<double> step_ms;
    double total = 0, first = 0;
    for (int r = 0; r <= opt.repeat; ++r) {  // r == 0: warm-up pass
      std::vector<at::Tensor> state;
      for (const auto& sh : shapes) state.push_back(at::zeros({batch, sh.first, sh.second}, opts_state));
      std::vector<at::Tensor> out_frames;
      out_frames.reserve(frames);
      const double t_pass = now_ms();
      for (int64_t t = 0; t < frames + delay; ++t) {
        std::vector<at::Tensor> in;
        in.reserve(2 + state.size());
        in.push_back(x.select(1, std::min(t, frames - 1)).contiguous());
        in.push_back(at::full({batch}, t, at::TensorOptions().dtype(at::kLong).device(device)));
        in.insert(in.end(), state.begin(), state.end());
        const double t0 = now_ms();
        auto out = run_checked(*step, in, "step");
        timer.sync();
        if (r > 0) step_ms.push_back(now_ms() - t0);
        if (out.size() != 1 + state.size())
          throw RunError("step: expected " + std::to_string(1 + state.size()) + " outputs, got " +
                         std::to_string(out.size()));
        if (t >= delay) out_frames.push_back(out[0]);
        state.assign(out.begin() + 1, out.end());
      }
      const double pass = now_ms() - t_pass;
      if (r == 0) {
        first = pass;
        poses = at::stack(out_frames, 1);
      } else {
        total += pass;
      }
    }
    const double mean_step = total / std::max<size_t>(1, step_ms.size());
    std::printf("  warm-up pass %.3f ms; %d timed pass(es) of %lld steps (delay %lld): total %.3f ms\n", first,
                opt.repeat, static_cast<long long>(frames + delay), static_cast<long long>(delay), total);
    std::printf("  per step: mean %.1f us, p50 %.1f us, p99 %.1f us, max %.1f us; %.1f frames/s\n",
                1000 * mean_step, 1000 * percentile(step_ms, 0.5), 1000 * percentile(step_ms, 0.99),
                1000 * percentile(step_ms, 1.0), batch * frames * opt.repeat / (total / 1000.0));
  }

  poses = poses.to(at::kCPU).to(at::kFloat).contiguous();
  if (poses.dim() != 4 || poses.size(0) != batch || poses.size(1) != frames || poses.size(2) != joints_out ||
      poses.size(3) != 3)
    throw RunError("model returned poses of shape " + shape_str(poses.sizes()) + ", expected (" +
                   std::to_string(batch) + ", " + std::to_string(frames) + ", " + std::to_string(joints_out) + ", 3)");
  std::vector<int64_t> out_shape = {frames, joints_out, 3};
  if (batched) out_shape.insert(out_shape.begin(), batch);
  try {
    fastlift::write_npy_f32(opt.output, out_shape, poses.data_ptr<float>());
  } catch (const fastlift::NpyError& e) {
    throw RunError(std::string("--output: ") + e.what());
  }
  std::cout << "  wrote " << opt.output << " " << shape_str(out_shape) << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  try {
    opt = parse_args(argc, argv);
  } catch (const UsageError& e) {
    std::cerr << "fastlift_run: error: " << e.what() << "\n"
              << "usage: fastlift_run PACKAGE.pt2 --input KEYPOINTS.npy --output POSES.npy [--stream] "
                 "[--device cpu|cuda[:i]] [--repeat N] [--threads N]  (--help for details)\n";
    return 2;
  }
  try {
    return run(opt);
  } catch (const RunError& e) {
    std::cerr << "fastlift_run: error: " << e.what() << "\n";
  } catch (const c10::Error& e) {
    std::cerr << "fastlift_run: error: " << first_line(e.what_without_backtrace()) << "\n";
  } catch (const std::exception& e) {
    std::cerr << "fastlift_run: error: " << e.what() << "\n";
  }
  return 1;
}
