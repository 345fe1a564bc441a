// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// Everything an application embedding coremap needs. Plugin authors include
/// <coremap/plugin.hpp> instead.

#include <coremap/cache.hpp>
#include <coremap/engine.hpp>
#include <coremap/error.hpp>
#include <coremap/latency_histogram.hpp>
#include <coremap/loaded_plugin.hpp>
#include <coremap/manifest.hpp>
#include <coremap/map.hpp>
#include <coremap/pipeline.hpp>
#include <coremap/plugin.hpp>
#include <coremap/plugin_loader.hpp>
#include <coremap/progress.hpp>
#include <coremap/record.hpp>
#include <coremap/resumable_output.hpp>
#include <coremap/sink.hpp>
#include <coremap/top_k.hpp>
#include <coremap/version.hpp>
