// Vite build of the dashboard. The output in dist/ is committed and embedded in the
// voltex binary, so the build must be deterministic: no source maps, no timestamps,
// content-hashed file names only.
import { defineConfig } from 'vite';

export default defineConfig({
  base: '/',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    sourcemap: false,
    target: 'es2022',
    assetsInlineLimit: 0,
    reportCompressedSize: false,
  },
});
