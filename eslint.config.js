import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['node_modules', 'coverage', 'docs', 'test/output'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-empty': ['error', { allowEmptyCatch: true }],
    },
  },
  // The ops console's browser modules (served as they are, no build step).
  // (Browser globals listed here rather than importing `globals`, which is not a direct dependency.)
  {
    files: ['src/api/console/**/*.js'],
    languageOptions: {
      globals: Object.fromEntries(
        [
          'window',
          'document',
          'location',
          'fetch',
          'prompt',
          'setInterval',
          'clearInterval',
          'setTimeout',
          'clearTimeout',
          'AudioContext',
          'OfflineAudioContext',
          'requestAnimationFrame',
          'MediaStream',
          'EventSource',
          'URLSearchParams',
          'FormData',
        ].map((g) => [g, 'readonly']),
      ),
    },
  },
);
