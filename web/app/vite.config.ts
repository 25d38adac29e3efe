import { defineConfig } from 'vite';

// The bundle is served by the org's own web host (`custos up`, or any static
// host of the org), under a strict CSP: no inline script, no eval but wasm's.
export default defineConfig({
  base: './',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    sourcemap: false,
    // Stable names: the CLI embeds these files (crates/cli/src/web_host.rs),
    // and the integrity hashes, not the names, say which build this is.
    rollupOptions: {
      output: { entryFileNames: 'assets/[name].js', chunkFileNames: 'assets/[name].js', assetFileNames: 'assets/[name][extname]' },
    },
  },
});
