// .npy reading/writing for fastlift_run; see npy.hpp for what is supported.
#include "npy.hpp"

#include <cctype>
#include <cstring>
#include <fstream>
#include <sstream>

namespace fastlift {
namespace {

const char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicLen = 6;

bool host_is_little_endian() {
  const uint16_t probe = 1;
  unsigned char first;
  std::memcpy(&first, &probe, 1);
  return first == 1;
}

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw NpyError("'" + path + "': " + what);
}

// Value of `key` in the header dict, as raw text up to the next top-level ',' or '}'.
std::string dict_value(const std::string& path, const std::string& header, const std::string& key) {
  const std::string quoted[2] = {"'" + key + "'", "\"" + key + "\""};
  size_t pos = std::string::npos;
  for (const auto& q : quoted) {
    pos = header.find(q);
    if (pos != std::string::npos) {
      pos += q.size();
      break;
    }
  }
  if (pos == std::string::npos) fail(path, "malformed .npy header: no '" + key + "' entry in " + header);
  pos = header.find(':', pos);
  if (pos == std::string::npos) fail(path, "malformed .npy header: no ':' after '" + key + "'");
  ++pos;
  int depth = 0;
  size_t end = pos;
  for (; end < header.size(); ++end) {
    const char c = header[end];
    if (c == '(') ++depth;
    if (c == ')') --depth;
    if (depth == 0 && (c == ',' || c == '}')) break;
    if (depth < 0) fail(path, "malformed .npy header: unbalanced parentheses in " + header);
  }
  std::string value = header.substr(pos, end - pos);
  const size_t a = value.find_first_not_of(" \t");
  const size_t b = value.find_last_not_of(" \t");
  return a == std::string::npos ? std::string() : value.substr(a, b - a + 1);
}

std::vector<int64_t> parse_shape(const std::string& path, const std::string& text) {
  if (text.size() < 2 || text.front() != '(' || text.back() != ')')
    fail(path, "malformed .npy header: shape should be a tuple, got " + text);
  std::vector<int64_t> shape;
  std::string item;
  std::stringstream ss(text.substr(1, text.size() - 2));
  while (std::getline(ss, item, ',')) {
    const size_t a = item.find_first_not_of(" \t");
    if (a == std::string::npos) continue;  // trailing comma of a 1-tuple
    const size_t b = item.find_last_not_of(" \tL");
    const std::string digits = item.substr(a, b - a + 1);
    if (digits.empty() || digits.size() > 18)
      fail(path, "malformed .npy header: bad dimension '" + item + "' in shape " + text);
    for (char c : digits)
      if (!std::isdigit(static_cast<unsigned char>(c)))
        fail(path, "malformed .npy header: bad dimension '" + item + "' in shape " + text);
    shape.push_back(std::stoll(digits));
  }
  return shape;
}

}  // namespace

int64_t NpyArray::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string NpyArray::shape_str() const {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  if (shape.size() == 1) s += ",";
  return s + ")";
}

NpyArray read_npy(const std::string& path) {
  if (!host_is_little_endian()) fail(path, "this reader only runs on little-endian hosts");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "no such file or not readable");
  in.seekg(0, std::ios::end);
  const std::streamoff file_size = in.tellg();
  in.seekg(0, std::ios::beg);

  char magic[kMagicLen + 2];
  if (file_size < static_cast<std::streamoff>(kMagicLen + 4) || !in.read(magic, kMagicLen + 2) ||
      std::memcmp(magic, kMagic, kMagicLen) != 0)
    fail(path, "not a .npy file (expected the \\x93NUMPY magic; save arrays with numpy.save)");
  const int major = static_cast<unsigned char>(magic[kMagicLen]);
  uint32_t header_len = 0;
  size_t prefix = 0;
  if (major == 1) {
    unsigned char b[2];
    if (!in.read(reinterpret_cast<char*>(b), 2)) fail(path, "truncated .npy header");
    header_len = b[0] | (b[1] << 8);
    prefix = kMagicLen + 4;
  } else if (major == 2 || major == 3) {
    unsigned char b[4];
    if (!in.read(reinterpret_cast<char*>(b), 4)) fail(path, "truncated .npy header");
    header_len = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<uint32_t>(b[3]) << 24);
    prefix = kMagicLen + 6;
  } else {
    fail(path, "unsupported .npy format version " + std::to_string(major) + " (expected 1, 2 or 3)");
  }
  if (static_cast<std::streamoff>(prefix + header_len) > file_size)
    fail(path, "truncated .npy header (header length " + std::to_string(header_len) + " exceeds the file)");
  std::string header(header_len, '\0');
  if (!in.read(&header[0], header_len)) fail(path, "truncated .npy header");

  NpyArray arr;
  std::string descr = dict_value(path, header, "descr");
  if (descr.size() >= 2 && (descr.front() == '\'' || descr.front() == '"')) descr = descr.substr(1, descr.size() - 2);
  if (descr == "<f4") {
    arr.word_size = 4;
  } else if (descr == "<f8") {
    arr.word_size = 8;
  } else if (descr == ">f4" || descr == ">f8") {
    fail(path, "big-endian data ('" + descr + "') is not supported; expected little-endian float32 or float64");
  } else {
    fail(path, "unsupported dtype '" + descr + "'; expected float32 ('<f4') or float64 ('<f8')");
  }
  const std::string fortran = dict_value(path, header, "fortran_order");
  if (fortran == "True") fail(path, "Fortran-order arrays are not supported; save a C-contiguous array");
  if (fortran != "False") fail(path, "malformed .npy header: fortran_order is '" + fortran + "'");
  arr.shape = parse_shape(path, dict_value(path, header, "shape"));

  const std::streamoff payload = file_size - static_cast<std::streamoff>(prefix + header_len);
  int64_t n = 1;
  for (int64_t d : arr.shape) {
    if (d != 0 && n > (int64_t{1} << 40) / d) fail(path, "array " + arr.shape_str() + " is too large");
    n *= d;
  }
  const int64_t bytes = n * arr.word_size;
  if (payload != bytes)
    fail(path, "data size mismatch: shape " + arr.shape_str() + " of " + std::to_string(arr.word_size) +
                   "-byte floats needs " + std::to_string(bytes) + " bytes, the file has " + std::to_string(payload));
  arr.data.resize(static_cast<size_t>(bytes));
  if (bytes > 0 && !in.read(arr.data.data(), bytes)) fail(path, "could not read the array data");
  return arr;
}

void write_npy_f32(const std::string& path, const std::vector<int64_t>& shape, const float* values) {
  if (!host_is_little_endian()) fail(path, "this writer only runs on little-endian hosts");
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (";
  int64_t n = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    dict += (i ? ", " : "") + std::to_string(shape[i]);
    n *= shape[i];
  }
  if (shape.size() == 1) dict += ",";
  dict += "), }";
  // Pad with spaces so that magic + version + length + header is a multiple of 64, ending in '\n'.
  const size_t unpadded = kMagicLen + 4 + dict.size() + 1;
  dict.append((64 - unpadded % 64) % 64, ' ');
  dict += '\n';
  if (dict.size() > 65535) fail(path, "array rank too large for a version 1.0 header");

  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) fail(path, "cannot open for writing");
  out.write(kMagic, kMagicLen);
  const char version[2] = {1, 0};
  out.write(version, 2);
  const unsigned char len[2] = {static_cast<unsigned char>(dict.size() & 0xff),
                                static_cast<unsigned char>(dict.size() >> 8)};
  out.write(reinterpret_cast<const char*>(len), 2);
  out.write(dict.data(), static_cast<std::streamsize>(dict.size()));
  out.write(reinterpret_cast<const char*>(values), static_cast<std::streamsize>(n * sizeof(float)));
  out.close();
  if (!out) fail(path, "write failed");
}

}  // namespace fastlift
