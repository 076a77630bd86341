// The trtd C++ client: #include <trtd/trtd.hpp>, link trtd::client.
#pragma once

#include "trtd/client.hpp"
#include "trtd/codec.hpp"
#include "trtd/dtype.hpp"
#include "trtd/endpoint.hpp"
#include "trtd/errors.hpp"
#include "trtd/messages.hpp"
#include "trtd/region.hpp"
#include "trtd/tensor.hpp"
#include "trtd/value.hpp"

namespace trtd {
inline constexpr const char* client_version = "0.1.0";
}
