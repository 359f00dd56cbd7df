// Type-aware lint: floating and misused promises, type-only imports, the layering of docs/architecture.md.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const layer = (patterns, message) => ({ group: patterns, message });

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
          ],
        },
      ],
    },
  },
  {
    files: ['shared/**/*.ts'],
    ignores: ['shared/data/**'],
    rules: {
      'no-console': 'error',
      'no-restricted-imports': [
        'error',
        {
          paths: [{ name: 'mongodb', message: 'Only shared/data imports mongodb.' }],
          patterns: [
            layer(['**/functions/**', '**/scripts/**'], 'shared/ never imports functions/ or scripts/.'),
          ],
        },
      ],
    },
  },
  {
    files: ['shared/data/**/*.ts', 'shared/whatsapp/**/*.ts', 'shared/ai/**/*.ts'],
    rules: {
      'no-console': 'error',
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            layer(
              ['**/bot/**', '**/manage/**', '**/functions/**', '**/scripts/**'],
              'Imports point down: data/whatsapp/ai never import bot/ or manage/.',
            ),
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
