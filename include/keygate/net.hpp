// Namespace aliases for the I/O parts; include only where I/O happens.
#pragma once

#include <boost/asio.hpp>

namespace keygate {
namespace net = boost::asio;
using tcp = boost::asio::ip::tcp;
using error_code = boost::system::error_code;
} // namespace keygate
