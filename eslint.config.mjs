// Type-aware lint: floating and misused promises, type-only imports, the layering of docs/architecture.md.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const layer = (patterns, message) => ({ group: patterns, message });
const MONGODB = { name: 'mongodb', message: 'Only shared/data imports mongodb.' };
const QUEUE_SDK = {
  name: '@azure/storage-queue',
  message: 'In Azure the Functions host does the queue work through bindings; only scripts/ use the SDK.',
};
const ROOT = layer(
  ['**/deps', '**/deps.ts'],
  'Only functions/ and scripts/ reach the composition root (shared/deps.ts).',
);
const UPPER = layer(
  ['**/bot/**', '**/manage/**'],
  'Imports point down: data/whatsapp/ai never import bot/ or manage/.',
);
/** The layering rules of one part of shared/. */
const shared = (files, ignores, paths, patterns = []) => ({
  files,
  ignores,
  rules: {
    'no-console': 'error',
    'no-restricted-imports': [
      'error',
      {
        paths,
        patterns: [
          layer(['**/functions/**', '**/scripts/**'], 'shared/ never imports functions/ or scripts/.'),
          ...patterns,
        ],
      },
    ],
  },
});

export default tseslint.config(
  {
    ignores: [
      'dist/**',
      'node_modules/**',
      '.data/**',
      '.cache/**',
      'test-output/**',
      'bench-output/**',
      '**/*.mjs',
      '**/*.js',
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
      // Function handlers are async by contract even when a branch has nothing to await.
      '@typescript-eslint/require-await': 'off',
    },
  },
  {
    // Browser modules (the dashboard): type-checked with their own tsconfig, whose DOM lib declares
    // the browser's globals (typescript-eslint turns no-undef off for TypeScript: tsc checks names).
    files: ['web/**/*.ts'],
    languageOptions: {
      parserOptions: {
        projectService: false,
        project: './tsconfig.web.json',
        tsconfigRootDir: import.meta.dirname,
      },
    },
  },
  {
    files: ['functions/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: [
            { name: 'mongodb', message: 'Only shared/data imports mongodb.' },
            { name: 'axios', message: 'functions/ are thin adapters: HTTP clients live in shared/.' },
            QUEUE_SDK,
          ],
        },
      ],
    },
  },
  // shared/: the composition root (deps.ts) builds everything; nothing below it imports it.
  shared(['shared/deps.ts'], [], [MONGODB, QUEUE_SDK]),
  shared(
    ['shared/bot/**/*.ts', 'shared/manage/**/*.ts', 'shared/*.ts'],
    ['shared/deps.ts'],
    [MONGODB, QUEUE_SDK],
    [ROOT],
  ),
  shared(['shared/whatsapp/**/*.ts', 'shared/ai/**/*.ts'], [], [MONGODB, QUEUE_SDK], [ROOT, UPPER]),
  shared(['shared/data/**/*.ts'], [], [QUEUE_SDK], [ROOT, UPPER]),
  // Scripts reach the database through shared/data; only the ping of the local server and the
  // FerretDB bench (a database of its own) use the driver (docs/architecture.md, "Layers").
  {
    files: ['scripts/**/*.ts'],
    ignores: ['scripts/lib/probe.ts', 'scripts/bench-ferretdb.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: [
            {
              name: 'mongodb',
              message:
                'Scripts use shared/data; only scripts/lib/probe.ts and scripts/bench-ferretdb.ts import mongodb.',
            },
          ],
        },
      ],
    },
  },
  {
    files: ['test/**/*.ts', 'scripts/**/*.ts', 'bench/**/*.ts'],
    rules: {
      '@typescript-eslint/no-non-null-assertion': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
      '@typescript-eslint/require-await': 'off',
      '@typescript-eslint/no-base-to-string': 'off',
      '@typescript-eslint/restrict-template-expressions': 'off',
    },
  },
);
