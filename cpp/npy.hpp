// Minimal .npy reader/writer for fastlift_run (NumPy format versions 1.0, 2.0 and 3.0).
//
// Supported: little-endian float32 ('<f4') and float64 ('<f8') arrays in C order, any rank
// (including 0-d). Anything else -- big-endian data, Fortran order, other dtypes, truncated or
// oversized payloads, malformed headers -- is rejected with an NpyError whose message names
// the file and says what was expected and what was found.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace fastlift {

struct NpyError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct NpyArray {
  std::vector<int64_t> shape;  // C-order dimensions
  int word_size = 0;           // 4 (float32) or 8 (float64)
  std::vector<char> data;      // shape-product * word_size bytes, little-endian

  int64_t numel() const;
  std::string shape_str() const;  // "(5, 17, 2)"
};

// Reads `path`. Throws NpyError on a missing/unreadable file or any unsupported content.
NpyArray read_npy(const std::string& path);

// Writes a little-endian float32 C-order array (format version 1.0) to `path`.
// `values` must hold the product of `shape` elements. Throws NpyError on I/O failure.
void write_npy_f32(const std::string& path, const std::vector<int64_t>& shape, const float* values);

}  // namespace fastlift
