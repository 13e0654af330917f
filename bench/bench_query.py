"""CPU time of `parse_query` on adversarial 100,000-character texts (issue 8.12 goal: < 0.2 s each)."""
import os, time
from drug_nbdev.config import ContractError
from drug_nbdev.query import parse_query

TEXTS = ['1.' * 50_000, ' ' * 100_000, '9' * 100_000, 'aged ' + '1.' * 50_000, 'Na/K ' + '1,' * 50_000,
         '52-' * 33_334, 'a ' * 50_000, ', ' * 50_000, 'hypertensive ' * 7_693, 'BP high ' * 12_500, 'no ' * 33_334,
         '52 M ' * 20_000, 'fifty-two ' * 10_000, 'high BP normal cholesterol ' * 3_704, "he's " * 20_000]

def main():
    worst = (0.0, '')
    for text in TEXTS:
        text = text[:100_000]
        t0 = time.process_time()
        try: parse_query(text)
        except ContractError: pass
        worst = max(worst, (time.process_time() - t0, text[:16]))
    print(f'query parser: slowest of {len(TEXTS)} texts of 100,000 chars: {worst[0]:.3f} s CPU ({worst[1]!r}…); '
          f'goal < 0.2 s; load average {os.getloadavg()[0]:.1f}')

if __name__ == '__main__': main()
