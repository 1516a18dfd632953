// Portability shims shared by every kernel header: math.h where a host or nvcc compiler has it
// (NVRTC has the math functions built in and no system headers), and empty __host__/__device__
// qualifiers for a plain C++ compiler, so the same headers compile in host-only test harnesses.
#pragma once

#if defined(__CUDACC_RTC__)
// NVRTC: no system headers; erf, erfc, exp, log, log1p, sqrt, sin, cos, tanh, fmax are built in.
#elif defined(__CUDACC__)
#include <math.h>
#else  // a plain C++ compiler (host-only tools)
#include <math.h>
#ifndef __host__
#define __host__
#endif
#ifndef __device__
#define __device__
#endif
#ifndef __forceinline__
#define __forceinline__ inline
#endif
#endif
