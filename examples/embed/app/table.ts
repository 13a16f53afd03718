export function squares(n: number): Map<string, number> {
  const table = new Map<string, number>();
  for (let i = 0; i < n; i++) table.set(`k${i}`, i * i);
  return table;
}
