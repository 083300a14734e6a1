/*
 * bcryptprimitives.dll for Wine versions without it (Wine 8.0 has none): Rust's standard
 * library gets its random bytes from ProcessPrng there, and a Windows binary that imports
 * it does not start without it. This forwards to RtlGenRandom (advapi32's
 * SystemFunction036), which Wine has. Test infrastructure only: never shipped.
 *
 * x86_64-w64-mingw32-gcc -shared -O2 -o bcryptprimitives.dll bcryptprimitives.c -ladvapi32
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    /* RtlGenRandom takes a ULONG length: fill larger buffers in chunks. */
    while (length > 0) {
        ULONG chunk = length > 0x10000000 ? 0x10000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
